set terminal pngcairo size 960,540
set termoption noenhanced
set grid
set key outside right top
set datafile missing "?"
set output "kernel-entries.png"
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set xtics rotate by -30
set yrange [0:*]
set title 'Kernel entries per message (client, median of reps)'
set ylabel 'kernel entries / message'
plot for [i=2:2] "kernel-entries.dat" using i:xtic(1) title columnheader(i)
