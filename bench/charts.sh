#!/usr/bin/env bash
# Charts of a results table written by bench/run.sh, drawn with gnuplot.
#
#   bench/charts.sh RESULTS.md OUTDIR
#
# Reads the first table of RESULTS.md (case | point | outbox | baseline |
# outbox ÷ baseline | PgQ / other | target | result) and writes to OUTDIR:
#   ratio-NN-<case>.png  per case with ratios: the median ratio to the
#                        baseline per point, the min–max over the runs as
#                        error bars, the target as a line over its point
#   events.png           events/s of outbox, the baseline and PgQ for the
#                        offer and drain cases, one panel per case
# Charts of an earlier call (ratio-*.png, events.png) are removed from OUTDIR
# first.  Prints a markdown section linking every chart, with paths relative
# to the directory of RESULTS.md, for appending to it.
set -euo pipefail

usage() { sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
[ $# = 2 ] || { usage >&2; exit 2; }
RESULTS=$1
OUTDIR=$2
[ -r "$RESULTS" ] || { echo "charts: cannot read $RESULTS" >&2; exit 1; }
command -v gnuplot >/dev/null ||
	{ echo "charts: gnuplot is missing (OUTBOX_BENCH_DEPS=1 scripts/install-deps.sh installs gnuplot-nox)" >&2; exit 1; }
export LC_ALL=C.UTF-8 LANG=C.UTF-8

mkdir -p "$OUTDIR"
TMP=$(mktemp -d /tmp/outbox-charts.XXXXXX)
trap 'rm -rf -- "$TMP"' EXIT

# One line per row of the table, tab-separated: case, point, then median,
# min and max of outbox, baseline, ratio and PgQ (NaN when the cell has no
# figure), then the target's comparison and value when it is a ratio.
awk -F'|' '
function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
function firstnum(s) { return match(s, /[0-9]+(\.[0-9]+)?/) ? substr(s, RSTART, RLENGTH) : "NaN" }
# "1,927 (1,541–3,084)" -> "1927\t1541\t3084"; a single figure has no range
function cell(s,   med, inner, a, n) {
	gsub(/,/, "", s)
	med = firstnum(s)
	if (med == "NaN") return "NaN\tNaN\tNaN"
	if (match(s, /\(.*\)/)) {
		inner = substr(s, RSTART + 1, RLENGTH - 2)
		n = split(inner, a, "–")
		if (n == 2) return med "\t" firstnum(a[1]) "\t" firstnum(a[2])
	}
	return med "\tNaN\tNaN"
}
/^\| case \| point \|/ { intable = 1; next }
intable && /^\|[-:| ]+\|$/ { next }
intable && !/^\|/ { if (seen) exit; next }
intable {
	seen = 1
	c = trim($2); p = trim($3)
	t = trim($8); op = "-"; tv = "NaN"
	if (t ~ /×/ && t ~ /[0-9]/) {
		tv = firstnum(t)
		op = (t ~ /≤/) ? "<=" : ">="
	}
	print c "\t" p "\t" cell($4) "\t" cell($5) "\t" cell($6) "\t" cell($7) "\t" op "\t" tv
}' "$RESULTS" >"$TMP/rows.tsv"
[ -s "$TMP/rows.tsv" ] || { echo "charts: no results table in $RESULTS" >&2; exit 1; }

rm -f -- "$OUTDIR"/ratio-*.png "$OUTDIR/events.png"

# a gnuplot string: double-quoted, with \\, \" and \n escaped
gq() {
	local s=${1//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "${s//$'\n'/\\n}"
}
# "drain, batch 1 (vs hand-written queue)" -> "drain, batch 1" and
# "hand-written queue"; the "(vs ...)" may also stand inside the name
VS_RE='^(.*) \(vs ([^)]*)\)(.*)$'
case_main() { if [[ "$1" =~ $VS_RE ]]; then printf '%s' "${BASH_REMATCH[1]}${BASH_REMATCH[3]}"; else printf '%s' "$1"; fi; }
case_base() { if [[ "$1" =~ $VS_RE ]]; then printf '%s' "${BASH_REMATCH[2]}"; else printf 'baseline'; fi; }
# set xtics ("point 1" 1, "point 2" 2, ...) from column 2 of a data file
xtics() { awk -F'\t' '{ gsub(/"/, "", $2); printf "%s\"%s\" %d", (NR > 1 ? ", " : "set xtics ("), $2, NR } END { print ")" }' "$1"; }
slug() {
	local s
	s=$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]' | sed -e 's/\([0-9]\),\([0-9]\)/\1\2/g' -e 's/[^a-z0-9]\{1,\}/-/g' -e 's/^-//' -e 's/-$//')
	while [ ${#s} -gt 40 ] && [[ "$s" == *-* ]]; do s=${s%-*}; done
	printf '%s' "${s:0:40}"
}

COMMON="set terminal pngcairo size 900,540 font 'DejaVu Sans,11' noenhanced
set encoding utf8
set datafile separator '\t'
set style fill solid 0.75 border -1
set grid ytics lc rgb '#dddddd'
set border 3
set xtics nomirror scale 0
set ytics nomirror
set key below horizontal"

# error bars from column LO to column HI: a vector with flat heads
EB="with vectors heads size screen 0.006,90 lc rgb '#222222' lw 1.5"

LINKS=()
n=0
mapfile -t CASES < <(cut -f1 "$TMP/rows.tsv" | awk '!seen[$0]++')
for c in "${CASES[@]}"; do
	awk -F'\t' -v c="$c" '$1 == c' "$TMP/rows.tsv" >"$TMP/case.tsv"
	# points with a ratio: x, point, median, min, max, target, where the
	# figure goes (above the bar or its error bar)
	awk -F'\t' 'BEGIN { OFS = "\t" } $9 != "NaN" { print ++i, $2, $9, $10, $11, $16, ($11 != "NaN" ? $11 : $9) }' "$TMP/case.tsv" >"$TMP/ratio.tsv"
	[ -s "$TMP/ratio.tsv" ] || continue
	n=$((n + 1))
	file=ratio-$(printf '%02d' "$n")-$(slug "$(case_main "$c")").png
	read -r npts ymax hasrange targets < <(awk -F'\t' '
		{ m = $3; if ($5 != "NaN" && $5 > m) m = $5; if ($6 != "NaN" && $6 > m) m = $6; if (m > top) top = m
		  if ($4 != "NaN") r = 1
		  if ($6 != "NaN" && !($6 in t)) { t[$6] = 1; nt++; tv = $6 } }
		END { printf "%d %.4f %d %s\n", NR, top * 1.18, r, nt == 0 ? "none" : nt == 1 ? tv : "many" }' "$TMP/ratio.tsv")
	op=$(awk -F'\t' '$16 != "NaN" { print $15; exit }' "$TMP/case.tsv")
	sign='≥'; [ "$op" = "<=" ] && sign='≤'
	case "$targets" in
		none) ttitle= ;;
		many) ttitle="target ($sign, per point)" ;;
		*) ttitle="target: $sign ${targets%.0000}×" ;;
	esac
	plots=("'$TMP/ratio.tsv' using 1:3 with boxes lc rgb '#4477aa' title 'median of the runs'")
	[ "$hasrange" = 1 ] && plots+=("'' using 1:4:(0):(\$5-\$4) $EB title 'min–max over the runs'")
	[ -n "$ttitle" ] && plots+=("'' using (\$1-0.45):6:(0.9):(0) with vectors nohead lw 3 dt 2 lc rgb '#cc3311' title $(gq "$ttitle")")
	plots+=("'' using 1:7:(sprintf('%.2f×', \$3)) with labels boxed offset 0,0.9 font ',11' notitle")
	plots+=("1 with lines lc rgb '#888888' dt 3 title '1× (equal)'")
	{
		echo "$COMMON"
		echo "set output $(gq "$OUTDIR/$file")"
		echo "set title $(gq "$(case_main "$c")
ratio to $(case_base "$c")")"
		echo "set ylabel 'ratio (×)'"
		xtics "$TMP/ratio.tsv"
		# at least three bars' room, so that one or two bars stay narrow
		case "$npts" in
			1) echo "set xrange [-0.5:2.5]" ;;
			2) echo "set xrange [0:3]" ;;
			*) echo "set xrange [0.4:$npts.6]" ;;
		esac
		echo "set yrange [0:$ymax]"
		echo "set boxwidth 0.6"
		echo "set style textbox opaque noborder margins 2,1"
		echo "plot $(IFS=,; echo "${plots[*]}")"
	} >"$TMP/ratio.gp"
	gnuplot "$TMP/ratio.gp"
	LINKS+=("$(case_main "$c"): ratio to $(case_base "$c")	$file")
done

# events/s of the offer and drain cases: one panel each
mapfile -t EV < <(printf '%s\n' "${CASES[@]}" | grep -E '^(offer|drain), ' || true)
if [ ${#EV[@]} -gt 0 ]; then
	rows=$(((${#EV[@]} + 1) / 2))
	cols=$((${#EV[@]} > 1 ? 2 : 1))
	{
		echo "${COMMON/size 900,540/size $((cols * 700)),$((rows * 460))}"
		echo "set output $(gq "$OUTDIR/events.png")"
		echo "set format y '%.0s%c'"
		echo "set ylabel 'events/s'"
		echo "set key inside top center horizontal samplen 2"
		echo "set multiplot layout $rows,$cols title 'events per second: median of the runs, bars min–max' font ',13'"
		i=0
		for c in "${EV[@]}"; do
			i=$((i + 1))
			awk -F'\t' -v c="$c" 'BEGIN { OFS = "\t" } $1 == c { print ++i, $2, $3, $4, $5, $6, $7, $8, $12, $13, $14 }' \
				"$TMP/rows.tsv" >"$TMP/events$i.tsv"
			read -r npts ymax haspgq < <(awk -F'\t' '
				{ for (k = 3; k <= 11; k++) if ($k != "NaN" && $k + 0 > top) top = $k + 0
				  if ($9 != "NaN") p = 1 }
				END { printf "%d %.1f %d\n", NR, top * 1.25, p }' "$TMP/events$i.tsv")
			# bars side by side, centred on the point
			if [ "$haspgq" = 1 ]; then w=0.26 xo=-0.27 xb=0 xp=0.27; else w=0.34 xo=-0.18 xb=0.18 xp=; fi
			f="'$TMP/events$i.tsv'"
			plots=("$f using (\$1$xo):3 with boxes lc rgb '#4477aa' title 'outbox'"
				"'' using (\$1$xo):4:(0):(\$5-\$4) $EB notitle"
				"'' using (\$1+$xb):6 with boxes lc rgb '#ddaa33' title $(gq "$(case_base "$c")")"
				"'' using (\$1+$xb):7:(0):(\$8-\$7) $EB notitle")
			if [ -n "$xp" ]; then
				plots+=("'' using (\$1+$xp):9 with boxes lc rgb '#999999' title 'PgQ'"
					"'' using (\$1+$xp):10:(0):(\$11-\$10) $EB notitle")
			fi
			echo "set title $(gq "$(case_main "$c")")"
			echo "set boxwidth $w"
			xtics "$TMP/events$i.tsv"
			echo "set xrange [0.4:$npts.6]"
			echo "set yrange [0:$ymax]"
			echo "plot $(IFS=,; echo "${plots[*]}")"
		done
		echo "unset multiplot"
	} >"$TMP/events.gp"
	gnuplot "$TMP/events.gp"
	LINKS+=("events per second, offer and drain: outbox, baseline, PgQ	events.png")
fi

[ ${#LINKS[@]} -gt 0 ] || { echo "charts: nothing to chart in $RESULTS" >&2; exit 1; }
rel=$(realpath -m --relative-to="$(dirname "$(realpath -m "$RESULTS")")" "$OUTDIR")
echo "## Charts"
echo
for l in "${LINKS[@]}"; do
	path=${l#*	}
	[ "$rel" = . ] || path=$rel/$path
	echo "![${l%%	*}]($path)"
	echo
done
