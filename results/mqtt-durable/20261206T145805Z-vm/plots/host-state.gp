set terminal pngcairo size 960,540
set termoption noenhanced
set grid
set key outside right top
set datafile missing "?"
set output "host-state.png"
set title 'Steadiness check before each repetition (p50 of the floor ping-pong)'
set xlabel 'record in run order'
set ylabel 'check p50 (µs)'
set yrange [0:*]
plot "host-state.dat" using 1:2 with linespoints lw 2 title 'check p50'
