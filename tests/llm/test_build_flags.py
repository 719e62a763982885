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


def test_make_rebuilds_llama_when_the_cpu_wants_other_flags(tmp_path):
    """The real Makefile, with a pip that only logs: a kept .venv is rebuilt when (only when)
    the flags this CPU wants differ from those it was built with."""
    import os
    import shutil
    import subprocess
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    venv, fake_bin = tmp_path / "v", tmp_path / "fb"
    venv.mkdir()
    fake_bin.mkdir()
    log = tmp_path / "pip.log"
    pip = fake_bin / "pip"
    pip.write_text(f'#!/bin/sh\necho "$CMAKE_ARGS :: $*" >> {log}\n')
    pip.chmod(0o755)
    old = time.time() - 60
    os.utime(tmp_path / "pyproject.toml", (old, old))
    for stamp in (".stamp-venv", ".stamp-torch", ".stamp-project"):
        (venv / stamp).touch()

    def make(flags: str) -> list[str]:
        before = log.read_text().splitlines() if log.exists() else []
        subprocess.run(["make", "-s", f"VENV={venv}", f"BIN={fake_bin}", f"LLAMA_CMAKE_ARGS={flags}",
                        str(venv / ".stamp-llama")], cwd=tmp_path, check=True, capture_output=True)
        return log.read_text().splitlines()[len(before):] if log.exists() else []

    first = make("-DGGML_AVX512=ON")
    assert first[0].startswith(" :: uninstall") and first[1].startswith("-DGGML_AVX512=ON :: install")
    assert make("-DGGML_AVX512=ON") == []  # same CPU: nothing to do
    again = make("-DGGML_AVX2=ON")  # the .venv met another CPU
    assert len(again) == 2 and again[1].startswith("-DGGML_AVX2=ON :: install")
