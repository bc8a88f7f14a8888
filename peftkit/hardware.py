"""What this machine can do, and the precision each `auto` setting picks from it.

Detection reads facts (CUDA devices, /proc/cpuinfo flags); choice is a pure function of those facts, so tests
inject a Hardware value instead of depending on the CPU they happen to run on. `peftkit train` and `peftkit doctor`
call the same choose_precision(), so what doctor says is what training does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

# CPU features that decide bf16: native bf16 dot products (AVX512-BF16) or AMX tiles make bf16 matmuls faster
# than fp32; without them PyTorch emulates bf16 through fp32 and a bf16 matmul is slower than an fp32 one.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gb: float
    compute_capability: str
    bf16: bool  # native bf16 (compute capability 8.0+)


@dataclass(frozen=True)
class Hardware:
    cpu_model: str = ""
    cpu_flags: frozenset[str] = frozenset()
    gpus: tuple[Gpu, ...] = ()

    @property
    def cuda(self) -> bool:
        return bool(self.gpus)

    @property
    def cpu_bf16(self) -> bool:
        return any(f in self.cpu_flags for f in BF16_CPU_FLAGS)

    def isa(self) -> dict[str, bool]:
        return {f: f in self.cpu_flags for f in ISA_FLAGS}

    def to_dict(self) -> dict:
        return {"cpu_model": self.cpu_model, "cpu_isa": self.isa(), "gpus": [asdict(g) for g in self.gpus]}


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first CPU; empty where /proc/cpuinfo does not exist (macOS, Windows)."""
    model, flags = "", frozenset()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if model and flags:
            break
    return model, flags


def detect() -> Hardware:
    import torch

    model, flags = read_cpuinfo()
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append(Gpu(p.name, round(p.total_memory / 2**30, 1), f"{p.major}.{p.minor}", p.major >= 8))
    return Hardware(cpu_model=model, cpu_flags=flags, gpus=tuple(gpus))


@dataclass(frozen=True)
class Choice:
    value: str
    source: str  # "recipe" (written explicitly) or "auto"
    why: str


@dataclass(frozen=True)
class Precision:
    """The three precision settings of a recipe with every `auto` replaced."""

    model_dtype: Choice       # model.dtype: un-quantized weights
    compute_dtype: Choice     # model.quantization.compute_dtype: 4-bit matmuls
    mixed_precision: Choice   # train.mixed_precision: Accelerate autocast (+ loss scaler for fp16)

    def to_dict(self) -> dict:
        return {k: asdict(getattr(self, k)) for k in ("model_dtype", "compute_dtype", "mixed_precision")}

    def summary(self, four_bit: bool) -> str:
        """One line for the console: what was chosen, and why (the first `auto` choice's reason)."""
        md, cd, mp = self.model_dtype, self.compute_dtype, self.mixed_precision
        auto = [c for c in ((md, cd) if four_bit else (md,)) + (mp,) if c.source == "auto"]
        return (f"precision: weights {md.value}{f', 4-bit compute {cd.value}' if four_bit else ''}, mixed precision "
                f"{mp.value} ({auto[0].why if auto else 'as the recipe says'})")


def auto_dtype(hw: Hardware) -> tuple[str, str]:
    """The fastest dtype that trains stably on this hardware, with the reason."""
    if hw.cuda:
        gpu = hw.gpus[0]
        if gpu.bf16:
            return "bfloat16", f"CUDA {gpu.name} (compute capability {gpu.compute_capability}) supports bf16"
        return "float16", f"CUDA {gpu.name} (compute capability {gpu.compute_capability}) has no bf16: fp16 with a loss scaler"
    if hw.cpu_bf16:
        found = [f for f in BF16_CPU_FLAGS if f in hw.cpu_flags]
        return "bfloat16", f"CPU has {'/'.join(found)}: bf16 matmuls are native"
    return "float32", "CPU has no AVX512-BF16/AMX: bf16 would be emulated and slower than fp32"


def concrete_dtype(name: str, hw: Hardware | None = None) -> str:
    """`name`, or this machine's choice where it is `auto`."""
    return auto_dtype(hw or detect())[0] if name == "auto" else name


def choose_precision(model_dtype: str, compute_dtype: str, mixed_precision: str, hw: Hardware) -> Precision:
    """Resolve `auto` in model.dtype, model.quantization.compute_dtype and train.mixed_precision.

    On CUDA the base runs in bf16 (fp16 where the GPU lacks bf16) under Accelerate's autocast of the same kind,
    fp16 with a gradient scaler. On CPU there is no autocast: the weights' dtype carries the speed, and the
    adapter's own math stays fp32.
    """
    dtype, why = auto_dtype(hw)

    def pick(value: str, auto_value: str, auto_why: str) -> Choice:
        return Choice(auto_value, "auto", auto_why) if value == "auto" else Choice(value, "recipe", "set in the recipe")

    if hw.cuda:
        mp_auto, mp_why = ("bf16" if dtype == "bfloat16" else "fp16"), why
    else:
        mp_auto, mp_why = "no", "CPU: no autocast; the base weights' dtype decides the matmul speed"
    return Precision(pick(model_dtype, dtype, why), pick(compute_dtype, dtype, why), pick(mixed_precision, mp_auto, mp_why))


def peak_memory_mb() -> tuple[float, str]:
    """(peak since the last reset_peak_memory(), what it is) for this process: the CUDA allocator's peak on a GPU,
    else the resident-set high-water mark (VmHWM: per address space, so a child process reports only itself)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20, "cuda_max_memory_allocated"
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "rss_peak"  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_peak"


def available_ram_bytes() -> tuple[int | None, str | None]:
    """(RAM the machine can still give without swapping, where that figure came from), or (None, None)."""
    try:
        import psutil

        return psutil.virtual_memory().available, "psutil"
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "/proc/meminfo"
    except OSError:
        pass
    return None, None


def memory_in_use_mb() -> float:
    """What peak_memory_mb() measures, now: CUDA memory allocated, else the resident set (VmRSS)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.memory_allocated() / 2**20
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return peak_memory_mb()[0]  # elsewhere only the peak is known


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc's malloc_trim): the resident set is then what is alive,
    not also what earlier, larger allocations left behind. A no-op where there is no glibc."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_memory() -> None:
    """Start a new peak: between loading, eval and training, so each phase's figure is its own. On CPU the free
    heap is released first, so a phase's peak starts from what is alive (and a measured run and the run it
    sizes start alike: peftkit.planning.measure)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    release_free_heap()
    try:  # Linux: "5" resets VmHWM to the current resident set
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass  # elsewhere the peak covers the whole process
