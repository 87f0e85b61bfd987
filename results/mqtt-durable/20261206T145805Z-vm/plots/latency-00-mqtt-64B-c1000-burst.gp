set terminal pngcairo size 960,540
set termoption noenhanced
set grid
set key outside right top
set datafile missing "?"
set output "latency-00-mqtt-64B-c1000-burst.png"
set logscale y
set title "RTT percentiles (median of reps): MQTT 64 B, 1000 conn, burst, 2 in flight, pattern=fanin, qos=1"
set ylabel 'RTT (µs, log scale)'
set xlabel 'percentile'
plot for [i=2:7] "latency-00-mqtt-64B-c1000-burst.dat" using i:xtic(1) with linespoints lw 2 title columnheader(i)
