# mk_timed.sh SRC DST: a copy of SRC with a timer around the decode-attention entry points
rm -rf "$2" && cp -r "$1" "$2" && cd "$2" && python3 - <<'PY'
p='decode_attention_impl.h'
s=open(p).read()
s=s.replace("/* Returns 0, or 1 when scratch","double PH(NAME)[4];\ndouble *CAT(NAME,_phases)(void) { return PH(NAME); }\n/* Returns 0, or 1 when scratch",1)
s=s.replace("#define CAT(a, b) CAT2(a, b)","#define CAT(a, b) CAT2(a, b)\n#define PH(n) CAT(n, _ph)",1)
s=s.replace("#undef CAT2","#undef CAT2\n#undef PH",1)
i=s.index("         int num_threads) {\n")+len("         int num_threads) {\n")
s=s[:i]+"    const double T0 = omp_get_wtime();\n"+s[i:]
s=s.replace("""    free(item_start), free(score_start), free(scores), free(partial);
    return 0;
}""","""    free(item_start), free(score_start), free(scores), free(partial);
    PH(NAME)[0] += omp_get_wtime() - T0;
    return 0;
}""")
open(p,'w').write(s)
PY
