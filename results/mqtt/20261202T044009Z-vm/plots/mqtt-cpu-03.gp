set terminal pngcairo size 1280,540
set termoption noenhanced
set grid
set key outside right top
set datafile missing "?"
set output "mqtt-cpu-03.png"
set multiplot layout 1,2
set logscale x
set xlabel 'connections: publishers (fan-in) / subscribers (fan-out), log'
set key inside top left font ',9'
set yrange [0:*]
set title "broker CPU per delivery: MQTT 64 B, burst, 2 in flight, notify=auto, pattern=fanin, qos=1, threads=2"
set ylabel 'broker CPU µs/delivery'
plot "mqtt-cpu-03.dat" index 0 using 1:2 with linespoints lw 2 title "ringlab_mqtt_threads:epoll", "mqtt-cpu-03.dat" index 1 using 1:2 with linespoints lw 2 title "ringlab_mqtt_threads:uring-fixed"
set title "deliveries/s: MQTT 64 B, burst, 2 in flight, notify=auto, pattern=fanin, qos=1, threads=2"
set ylabel 'deliveries/s'
plot "mqtt-cpu-03.dat" index 0 using 1:3 with linespoints lw 2 title "ringlab_mqtt_threads:epoll", "mqtt-cpu-03.dat" index 1 using 1:3 with linespoints lw 2 title "ringlab_mqtt_threads:uring-fixed"
unset multiplot
