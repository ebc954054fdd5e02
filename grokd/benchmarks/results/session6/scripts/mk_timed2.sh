# this tree's kernels/csrc with a timer around the decode-attention entry points, in /tmp/ab/csrc_t
# (session 7's mk_timed.sh does the copy and the edit for any source directory)
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p /tmp/ab && bash "$HERE/../../session7/scripts/mk_timed.sh" "$HERE/../../../../kernels/csrc" /tmp/ab/csrc_t
