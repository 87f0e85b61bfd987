set terminal pngcairo size 960,540
set termoption noenhanced
set grid
set key outside right top
set datafile missing "?"
set output "goodput-loss-00.png"
set title "Goodput vs loss: RUDP 65536 B chunks, bytes=104857600, direction=upload"
set xlabel 'loss (%)'
set ylabel 'goodput (MB/s)'
set yrange [0:*]
set key inside top right
plot "goodput-loss-00.dat" index 0 using 1:2 with linespoints lw 2 title "ringlab_rudp_bench:epoll", "goodput-loss-00.dat" index 1 using 1:2 with linespoints lw 2 title "ringlab_rudp_bench:uring-fixed", "goodput-loss-00.dat" index 2 using 1:2 with linespoints lw 2 title "ringlab_rudp_bench_nc:epoll", "goodput-loss-00.dat" index 3 using 1:2 with linespoints lw 2 title "ringlab_rudp_bench_nc:uring-fixed", "goodput-loss-00.dat" index 4 using 1:2 with linespoints lw 2 title "enet:default"
