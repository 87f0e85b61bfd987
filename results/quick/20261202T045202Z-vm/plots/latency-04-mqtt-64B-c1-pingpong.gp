set terminal pngcairo size 960,540
set termoption noenhanced
set grid
set key outside right top
set datafile missing "?"
set output "latency-04-mqtt-64B-c1-pingpong.png"
set logscale y
set title "RTT percentiles (median of reps): MQTT 64 B, 1 conn, pingpong, qos=1"
set ylabel 'RTT (µs, log scale)'
set xlabel 'percentile'
plot for [i=2:4] "latency-04-mqtt-64B-c1-pingpong.dat" using i:xtic(1) with linespoints lw 2 title columnheader(i)
