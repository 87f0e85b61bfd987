set terminal pngcairo size 960,540
set termoption noenhanced
set grid
set key outside right top
set datafile missing "?"
set output "rate-01-mqtt-64B-c100.png"
set multiplot layout 1,2
set title "Achieved vs offered rate: MQTT 64 B, 100 conn, pattern=fanin, qos=2"
set xlabel 'offered msg/s'
set ylabel 'achieved msg/s'
set key top left
plot "rate-01-mqtt-64B-c100.dat" index 0 using 1:2 with linespoints lw 2 title "ringlab_mqtt_durable:memory", "rate-01-mqtt-64B-c100.dat" index 1 using 1:2 with linespoints lw 2 title "ringlab_mqtt_durable:batch", "rate-01-mqtt-64B-c100.dat" index 2 using 1:2 with linespoints lw 2 title "ringlab_mqtt_durable:batch-window1000", x with lines dt 2 lc rgb 'gray' title 'offered'
set title "p99 RTT vs offered rate: MQTT 64 B, 100 conn, pattern=fanin, qos=2"
set logscale y
set ylabel 'p99 RTT (µs, log)'
plot "rate-01-mqtt-64B-c100.dat" index 0 using 1:3 with linespoints lw 2 title "ringlab_mqtt_durable:memory", "rate-01-mqtt-64B-c100.dat" index 1 using 1:3 with linespoints lw 2 title "ringlab_mqtt_durable:batch", "rate-01-mqtt-64B-c100.dat" index 2 using 1:3 with linespoints lw 2 title "ringlab_mqtt_durable:batch-window1000"
unset multiplot
