set terminal pngcairo size 960,540
set termoption noenhanced
set grid
set key outside right top
set datafile missing "?"
set output "latency-02-tcp-64B-c10000-burst.png"
set logscale y
set title "RTT percentiles (median of reps): TCP 64 B, 10000 conn, burst, 8 in flight"
set ylabel 'RTT (µs, log scale)'
set xlabel 'percentile'
plot for [i=2:4] "latency-02-tcp-64B-c10000-burst.dat" using i:xtic(1) with linespoints lw 2 title columnheader(i)
