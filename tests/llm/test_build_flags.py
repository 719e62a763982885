from gecko_factory.llm.build_flags import cmake_args, cpu_flags

EPYC = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c bmi2\n"  # AVX2 only (the earlier VM)
XEON = ("processor\t: 0\nflags\t\t: avx avx2 fma f16c avx512f avx512dq avx512cd avx512bw avx512vl "
        "avx512_vnni avx512_bf16 avx512vbmi avx_vnni amx_tile amx_int8 amx_bf16\n")


def test_an_avx2_cpu_gets_the_portable_build():
    args = cmake_args(cpu_flags(EPYC)).split()
    assert "-DGGML_NATIVE=OFF" in args and "-DGGML_AVX2=ON" in args
    assert not any("AVX512" in a for a in args)


def test_an_avx512_cpu_gets_its_extensions_and_never_amx():
    args = cmake_args(cpu_flags(XEON)).split()
    assert {"-DGGML_AVX512=ON", "-DGGML_AVX512_VNNI=ON", "-DGGML_AVX512_BF16=ON", "-DGGML_AVX_VNNI=ON"} <= set(args)
    assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF", "-DGGML_NATIVE=OFF"} <= set(args)
    assert not any(a.startswith("-DGGML_AMX") and a.endswith("=ON") for a in args)


def test_avx512_needs_all_five_of_ggmls_base_flags():
    partial = XEON.replace(" avx512vl", "")
    assert not any("AVX512" in a for a in cmake_args(cpu_flags(partial)).split())
    assert cmake_args(cpu_flags("")) == cmake_args(set())  # no cpuinfo: the portable build
