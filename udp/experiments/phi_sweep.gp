# Detection time against false-suspicion rate (phi_sweep.csv).
set datafile separator ','
set terminal pngcairo size 1800,1000 noenhanced
set output 'phi_sweep.png'
set multiplot layout 2,3 title 'phi accrual: detection time vs false suspicions (labels: threshold)'
set logscale y
set yrange [0.005:*]
set xlabel 'mean detection time after a crash (ms)'
set ylabel 'false suspicions per hour (0 drawn at 0.01)'
set key top right
nonzero(x) = x > 0 ? x : 0.01
do for [sc in 'jitter jitter+burst10'] {
  do for [fam in 'min_std=h/4 min_std=h min_std=3h'] {
    set title sc.', '.fam
    plot for [h in '20 50 100 200'] 'phi_sweep.csv' \
      using (strcol(1) eq sc && strcol(2) eq fam && strcol(3) eq h ? $8 : 1/0):(nonzero($7)) \
      with linespoints title 'h='.h.' ms', \
      for [h in '20 50 100 200'] 'phi_sweep.csv' \
      using (strcol(1) eq sc && strcol(2) eq fam && strcol(3) eq h ? $8 : 1/0):(nonzero($7)):(sprintf('%d', $4)) \
      with labels offset 0.6,0.6 font ',7' notitle
  }
}
unset multiplot
