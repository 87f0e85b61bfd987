set terminal pngcairo size 1280,540
set termoption noenhanced
set grid
set key outside right top
set datafile missing "?"
set output "scale-03-tcp-64B-rate.png"
set multiplot layout 1,2
set logscale x
set xlabel 'connections (log)'
set key inside top left font ',9'
set xrange [0.7:*]
set title "msg/s: TCP 64 B, rate @ 100000/s"
set ylabel 'msg/s'
set yrange [0:*]
plot "scale-03-tcp-64B-rate.dat" index 0 using 1:2 with linespoints lw 2 title "ringlab_pingpong:epoll", "scale-03-tcp-64B-rate.dat" index 1 using 1:2 with linespoints lw 2 title "ringlab_pingpong:uring-fixed", "scale-03-tcp-64B-rate.dat" index 2 using 1:2 with linespoints lw 2 title "ringlab_pingpong:uring-busy"
set title "server CPU per message: TCP 64 B, rate @ 100000/s"
set ylabel 'server CPU µs/msg'
plot "scale-03-tcp-64B-rate.dat" index 0 using 1:3 with linespoints lw 2 title "ringlab_pingpong:epoll", "scale-03-tcp-64B-rate.dat" index 1 using 1:3 with linespoints lw 2 title "ringlab_pingpong:uring-fixed", "scale-03-tcp-64B-rate.dat" index 2 using 1:3 with linespoints lw 2 title "ringlab_pingpong:uring-busy"
unset multiplot
