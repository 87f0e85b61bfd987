set terminal pngcairo size 1280,540
set termoption noenhanced
set grid
set key outside right top
set datafile missing "?"
set output "scale-00-tcp-64B-burst.png"
set multiplot layout 1,2
set logscale x
set xlabel 'connections (log)'
set key inside top left font ',9'
set xrange [0.7:*]
set title "msg/s: TCP 64 B, burst, 8 in flight"
set ylabel 'msg/s'
set yrange [0:*]
plot "scale-00-tcp-64B-burst.dat" index 0 using 1:2 with linespoints lw 2 title "ringlab_pingpong:epoll", "scale-00-tcp-64B-burst.dat" index 1 using 1:2 with linespoints lw 2 title "ringlab_pingpong:uring-fixed", "scale-00-tcp-64B-burst.dat" index 2 using 1:2 with linespoints lw 2 title "ringlab_pingpong:uring-busy"
set title "server CPU per message: TCP 64 B, burst, 8 in flight"
set ylabel 'server CPU µs/msg'
plot "scale-00-tcp-64B-burst.dat" index 0 using 1:3 with linespoints lw 2 title "ringlab_pingpong:epoll", "scale-00-tcp-64B-burst.dat" index 1 using 1:3 with linespoints lw 2 title "ringlab_pingpong:uring-fixed", "scale-00-tcp-64B-burst.dat" index 2 using 1:3 with linespoints lw 2 title "ringlab_pingpong:uring-busy"
unset multiplot
