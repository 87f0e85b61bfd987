set terminal pngcairo size 960,540
set termoption noenhanced
set grid
set key outside right top
set datafile missing "?"
set output "latency-02-rudp-64B-c1-pingpong.png"
set logscale y
set title "RTT percentiles (median of reps): RUDP 64 B, 1 conn, pingpong, loss_pct=0"
set ylabel 'RTT (µs, log scale)'
set xlabel 'percentile'
plot for [i=2:4] "latency-02-rudp-64B-c1-pingpong.dat" using i:xtic(1) with linespoints lw 2 title columnheader(i)
