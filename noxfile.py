"""The hardware matrix. `nox -l` lists the sessions; `nox` runs the default (no-hardware) set.

Environments live outside the clone (FABRIC_NOX_ENVDIR, default ~/.cache/fabric-nox) and are
reused between runs, so a fresh clone does not reinstall torch, DeepSpeed's compiled ops or the
torch-xla environment. Our own packages are installed editable, and reinstalled only when their
metadata (pyproject.toml, version) or the session's install list changed: a stamp in each
environment records what was installed (FABRIC_NOX_REINSTALL=1 forces a reinstall).

Installs go through uv when nox finds it (`pip install nox uv`), else through pip. uv keeps one
unpacked copy of each wheel in its cache and hardlinks it into every environment, so the sixteen
environments share one torch on disk and a fresh one takes seconds; it is given pip's configuration
(tools/uv_pip_options.py) so both installers pick the same builds (the local CPU torch, not PyPI's CUDA one).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = ROOT / "packages"
TORCH = "torch==2.13.0"  # the CPU build on this machine's disk; pip finds it without a download
XLA_TORCH = ("torch==2.9.0", "torch_xla==2.9.0")  # torch-xla needs exactly this torch
TEST_TOOLS = ("pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6")
#: a real S3-compatible server on loopback for the remote-checkpoint tests (moto_server + s3fs)
S3_TEST_TOOLS = ("moto[server]>=5", "s3fs>=2023.1")

nox.options.envdir = os.environ.get("FABRIC_NOX_ENVDIR", str(Path.home() / ".cache" / "fabric-nox"))
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
# uv when installed beside nox or on PATH (environments in seconds, torch hardlinked from one cache), else virtualenv + pip.
nox.options.default_venv_backend = "uv|virtualenv"


class _DropUvNotFound(logging.Filter):
    """nox logs "uv binary not found." on every run without uv; it then falls back to virtualenv and pip,
    which is a supported setup (only slower to build environments), so that one message is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "uv binary not found."


logging.getLogger("nox").addFilter(_DropUvNotFound())


def _pkg(name: str) -> str:
    return str(PACKAGES / name)


@functools.cache  # one `pip config list` per nox run: the stamp and every install of every session ask
def _uv_pip_options() -> tuple[tuple[str, ...], dict[str, str]]:
    """pip's configuration (find-links, indexes, constraints, cert) as `uv pip install` flags and variables."""
    spec = importlib.util.spec_from_file_location("uv_pip_options", ROOT / "tools" / "uv_pip_options.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    flags, variables = module.uv_options(module.pip_settings(module.read_pip_config()))
    return tuple(flags), variables


def _pip_install(session: nox.Session, *args: str, reinstall: tuple[str, ...] = ()) -> None:
    """`session.install` with the same package sources under uv as under pip.

    ``reinstall`` names distributions to reinstall even when present (pip reinstalls a local directory
    every time; uv only when told).
    """
    if session.venv_backend != "uv":
        session.install(*args)
        return
    options, variables = _uv_pip_options()
    flags = list(options)
    for name in reinstall:
        flags += ["--reinstall-package", name]
    session.install(*flags, *args, env=variables)


def _uv_binary() -> str | None:
    """uv installed beside nox (`pip install nox uv`) or on PATH; None without it."""
    import shutil

    try:
        from uv import find_uv_bin
    except ImportError:
        return shutil.which("uv")
    try:
        return find_uv_bin()
    except FileNotFoundError:
        return shutil.which("uv")


def _installed_torch(venv: Path) -> str:
    """The torch version installed in ``venv`` and whether it is a CUDA build (read from its metadata)."""
    versions = [
        p.name.removesuffix(".dist-info").split("-")[1]
        for p in venv.glob("lib/python*/site-packages/torch-*.dist-info")
    ]
    cuda = any(venv.glob("lib/python*/site-packages/nvidia_*.dist-info"))
    return f"torch {', '.join(versions) or 'missing'} ({'CUDA build with NVIDIA libraries' if cuda else 'CPU build'})"


def _metadata_stamp(packages: tuple[str, ...], *install_args: str) -> str:
    """A digest of what an install depends on: the installed packages' pyproject.toml and version files, and the arguments.

    Sources are installed editable, so code changes need no reinstall; a changed dependency, entry point,
    version or install list does.
    """
    digest = hashlib.sha256("\0".join((*packages, *install_args)).encode())
    for name in packages:
        for path in [PACKAGES / name / "pyproject.toml", *sorted((PACKAGES / name).glob("src/*/__about__.py"))]:
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _has_torch(venv: Path) -> bool:
    return any(venv.glob("lib/python*/site-packages/torch/__init__.py"))


def _install(
    session: nox.Session, *packages: str, extra: tuple[str, ...] = (), torch: tuple[str, ...] = (TORCH,)
) -> None:
    """Install torch first (pinned, so pip never reaches for a CUDA build), then our packages editable.

    Skipped when the environment's stamp says the same install already happened (see the module docstring).
    """
    venv = Path(session.virtualenv.location)
    stamp_file = venv / ".fabric-install-stamp"
    # uv's flags count too: a change in them (such as --compile-bytecode) reinstalls once
    installer = _uv_pip_options()[0] if session.venv_backend == "uv" else ()
    stamp = _metadata_stamp(("fabric-core", *packages), *extra, *torch, *installer)
    if stamp_file.is_file() and stamp_file.read_text() == stamp and os.environ.get("FABRIC_NOX_REINSTALL") != "1":
        session.log(
            f"packages unchanged since the last install into {venv}; not reinstalling (FABRIC_NOX_REINSTALL=1 forces it)"
        )
        return
    first = not _has_torch(venv)
    if first:
        session.log(
            f"first run of {session.name!r}: installing {', '.join(torch)} and the test tools into {venv} "
            + (
                "(torch 2.9 is PyPI's CUDA build: about 3 GB of downloads the first time, 2 minutes here). Later runs reuse it."
                if torch == XLA_TORCH
                else "(seconds once torch is in uv's cache, plus about 20 s compiling it to bytecode; the first "
                "environment unpacks it). Later runs reuse it."
                if session.venv_backend == "uv"
                else "(about 1 GB: under a minute from a local torch wheel, 5-10 minutes when pip downloads torch; "
                "`pip install uv` makes this seconds). Later runs reuse it."
            )
        )
    _pip_install(session, *torch, *TEST_TOOLS, *extra)
    if first:
        session.log(_installed_torch(venv))
    args: list[str] = []
    for package in ("fabric-core", *packages):
        args += ["-e", _pkg(package)]
    # --no-deps for siblings would skip their third-party deps; a constraint keeps torch where it is.
    constraint = Path(session.create_tmp()) / "torch-pin.txt"
    constraint.write_text("\n".join(torch) + "\n")
    _pip_install(session, "-c", str(constraint), *args, reinstall=("fabric-core", *packages))
    stamp_file.write_text(stamp)


def _pytest(session: nox.Session, *paths: str, markers: str | None = None) -> None:
    # -rxs: the reasons of skips and xfails; --durations: the slowest tests, where a session's time goes
    args = ["-p", "no:cacheprovider", "-q", "-rxs", "--durations=8", *paths]
    if markers:
        args += ["-m", markers]
    session.run("python", "-m", "pytest", *args, *session.posargs, env={"PYTHONHASHSEED": "0"})


@nox.session
def core(session: nox.Session) -> None:
    """fabric-core unit tests in one process: API, plan resolution, wrappers, checkpoint IO (CPU)."""
    _install(session, extra=("numpy", "fsspec", "tqdm", *S3_TEST_TOOLS))
    _pytest(
        session, "packages/fabric-core/tests", "--ignore=packages/fabric-core/tests/faults", markers="not multiprocess"
    )


@nox.session
def cpu(session: nox.Session) -> None:
    """fabric-core multi-process tests: DDP/FSDP over gloo on loopback, launchers, `fabric run`, torchrun."""
    _install(session, extra=("numpy", "fsspec", *S3_TEST_TOOLS))
    _pytest(session, "packages/fabric-core/tests", "--ignore=packages/fabric-core/tests/faults", markers="multiprocess")


@nox.session
def faults(session: nox.Session) -> None:
    """Fault suite: killed, hung and failing ranks, SIGKILL during save, damaged checkpoints, argument fuzzing."""
    _install(session, extra=("numpy", "fsspec"))
    _pytest(session, "packages/fabric-core/tests/faults")


@nox.session
def cuda_unit(session: nox.Session) -> None:
    """fabric-cuda on a CPU-only machine: import, clear errors, device selection with CUDA calls faked."""
    _install(session, "fabric-cuda", extra=("numpy",))
    _pytest(session, "packages/fabric-cuda/tests", markers="not cuda")


@nox.session
def loggers(session: nox.Session) -> None:
    """fabric-loggers: TensorBoard and CSV loggers, files read back with TensorBoard's own reader."""
    _install(session, "fabric-loggers", extra=("numpy",))
    _pytest(session, "packages/fabric-loggers/tests", markers="not trackers")  # the `trackers` session runs those


@nox.session
def deepspeed_cpu(session: nox.Session) -> None:
    """fabric-deepspeed with real DeepSpeed on its CPU accelerator (ZeRO 1/2/3, offload), 2 gloo processes."""
    _install(session, "fabric-deepspeed", extra=("numpy", *S3_TEST_TOOLS))
    session.env.setdefault("DS_ACCELERATOR", "cpu")
    session.env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(nox.options.envdir) / "torch_extensions"))
    _pytest(session, "packages/fabric-deepspeed/tests", markers="not cuda")


@nox.session
def xla_cpu(session: nox.Session) -> None:
    """fabric-xla for real on PyTorch/XLA's CPU device (PJRT_DEVICE=CPU): single device and SPMD."""
    _install(session, "fabric-xla", extra=("numpy",), torch=XLA_TORCH)
    session.env.update({"PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "2"})
    _pytest(session, "packages/fabric-xla/tests", markers="not tpu")


@nox.session
def integration(session: nox.Session) -> None:
    """User-level scripts (the examples among them) run with every CPU package installed together."""
    _install(session, "fabric-loggers", "fabric-deepspeed", "fabric-cuda", extra=("numpy", "scikit-learn", "tqdm"))
    session.env.setdefault("DS_ACCELERATOR", "cpu")
    session.env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(nox.options.envdir) / "torch_extensions"))
    _pytest(session, "integration_tests", markers="not cuda and not tpu")


@nox.session(default=False)
def example(session: nox.Session) -> None:
    """Train the digits classifier (examples/digits.py); pass options after --, e.g. -- --devices 2."""
    _install(session, "fabric-loggers", extra=("scikit-learn", "tqdm"))
    session.run("python", "examples/digits.py", *session.posargs)


@nox.session(venv_backend="none", default=False)
def dev(session: nox.Session) -> None:
    """A development environment: .venv/ with every CPU package editable, the `fabric` and `torchrun` commands.

    `nox -s dev -- PATH` (or FABRIC_DEV_VENV=PATH) puts it elsewhere. Run again after changing a pyproject.toml.
    """
    target = Path(session.posargs[0] if session.posargs else os.environ.get("FABRIC_DEV_VENV", ROOT / ".venv"))
    target = target.resolve()
    python = target / "bin" / "python"
    uv = _uv_binary()
    if not python.exists():
        session.log(
            f"creating {target} (torch {TORCH.split('==')[1]} CPU build and the test tools: about 1 GB, "
            + ("under a minute with uv)" if uv else "3-8 minutes; `pip install uv` makes it under a minute)")
        )
        if uv:
            session.run(uv, "venv", "--quiet", "--python", sys.executable, str(target), external=True)
        else:
            session.run(sys.executable, "-m", "venv", str(target), external=True)
    variables: dict[str, str] = {}
    if uv:
        flags, variables = _uv_pip_options()
        pip = (uv, "pip", "install", "--quiet", "--python", str(python), *flags)
    else:
        pip = (str(python), "-m", "pip", "install", "--quiet")
    # pip itself too: a venv made by uv has none, and `.venv/bin/pip install ...` is how extra tools go in.
    tools = ("pip", TORCH, *TEST_TOOLS, "numpy", "fsspec", "scikit-learn", "tqdm", "ruff>=0.6")
    session.run(*pip, *tools, external=True, env=variables)
    constraint = target / "torch-pin.txt"
    constraint.write_text(TORCH + "\n")
    packages = ("fabric-core", "fabric-cuda", "fabric-deepspeed", "fabric-loggers")  # fabric-xla needs torch 2.9
    editable = [arg for name in packages for arg in ("-e", _pkg(name))]
    reinstall = [arg for name in packages for arg in ("--reinstall-package", name)] if uv else []
    session.run(*pip, *reinstall, "-c", str(constraint), *editable, external=True, env=variables)
    session.run(str(target / "bin" / "fabric"), "--help", external=True, silent=True)
    session.log(
        f"ready: `source {target}/bin/activate`, then `fabric run --devices 2 examples/digits.py` "
        "or `torchrun --nproc-per-node 2 examples/digits.py`"
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole repository, and the backend contract (.importlinter) over the sources."""
    _pip_install(session, "ruff>=0.6", "import-linter>=2.1")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # import-linter reads the sources from these folders; nothing is imported, so no torch is needed.
    sources = os.pathsep.join(str(PACKAGES / p / "src") for p in sorted(os.listdir(PACKAGES)))
    session.run("lint-imports", "--config", ".importlinter", env={"PYTHONPATH": sources})


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with warnings as errors, then run every full script it shows.

    `nox -s docs -- serve` serves the site at http://127.0.0.1:8000 instead (rebuilt on every edit).
    """
    _install(
        session,
        "fabric-loggers",
        extra=("mkdocs>=1.6,<2", "mkdocs-material>=9", "mkdocstrings[python]>=0.25", "ruff>=0.6"),
    )
    # mkdocs-material and mkdocs-get-deps print a banner about MkDocs 2.0 on every build; these are their opt-outs.
    session.env.update({"NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"})
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", "-f", "docs/mkdocs.yml", *session.posargs[1:])
        return
    session.run("mkdocs", "build", "--strict", "-f", "docs/mkdocs.yml", "-d", str(Path(session.create_tmp()) / "site"))
    _pytest(session, "docs/tests")


@nox.session
def tools(session: nox.Session) -> None:
    """Release tooling: sibling pins agree with versions; the tools' tests; wheels install into a fresh venv with `fabric`."""
    # pytest-timeout: the root pyproject's `timeout` option belongs to it (pytest warns about an unknown option without it).
    # pip: tools/build_wheels.py runs `python -m pip wheel` (an environment made by uv has no pip of its own).
    _pip_install(session, "pip", "packaging", "pytest>=8", "pytest-timeout>=2.3", "build", "twine", "hatchling")
    session.run("python", "tools/check_pins.py")
    _pytest(session, "tools/tests")
    # The install the README documents, from wheels built here into a fresh venv (torch from the local disk).
    session.run("python", "tools/check_extras_install.py", "--extras", "cuda", "--no-isolation")


@nox.session(default=False)
def release(session: nox.Session) -> None:
    """Build and check every wheel and sdist (twine), and prove the extras install exactly their siblings."""
    _pip_install(session, "pip", "packaging", "build", "twine", "hatchling")
    session.run("python", "tools/build_wheels.py", "--check")
    session.run("python", "tools/check_extras_install.py")


def _has_nvidia_gpu() -> bool:
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return False
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return result.returncode == 0 and "GPU" in result.stdout


def _has_tpu() -> bool:
    import glob

    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")) or "TPU_NAME" in os.environ


def _require_or_skip(session: nox.Session, present: bool, what: str) -> None:
    """Skip the hardware leg where the hardware is absent, unless the runner says it is required."""
    if present:
        return
    message = f"this machine has no {what}"
    if os.environ.get("FABRIC_REQUIRE_HARDWARE") == "1":
        session.error(f"FABRIC_REQUIRE_HARDWARE=1 but {message}")
    session.skip(
        f"{message}; the {session.name} leg runs where it exists (set FABRIC_REQUIRE_HARDWARE=1 to make this fatal)"
    )


def _hardware_session(session: nox.Session, marker: str, packages: tuple[str, ...], torch: tuple[str, ...]) -> None:
    _install(session, *packages, extra=("numpy", "scikit-learn"), torch=torch)
    session.env["FABRIC_HARDWARE_LEG"] = marker
    paths = [f"packages/{p}/tests" for p in ("fabric-core", *packages)] + ["integration_tests"]
    _pytest(session, *paths, markers=marker)


@nox.session(default=False)
def cuda(session: nox.Session) -> None:
    """Hardware leg: every test marked `cuda` on a real GPU (skips without one unless FABRIC_REQUIRE_HARDWARE=1)."""
    _require_or_skip(session, _has_nvidia_gpu(), "NVIDIA GPU")
    _hardware_session(
        session,
        "cuda",
        ("fabric-cuda", "fabric-deepspeed", "fabric-loggers"),
        (os.environ.get("FABRIC_CUDA_TORCH", TORCH),),
    )


@nox.session(default=False)
def tpu(session: nox.Session) -> None:
    """Hardware leg: every test marked `tpu` on a real TPU with PJRT_DEVICE=TPU (skips without one)."""
    _require_or_skip(session, _has_tpu(), "TPU")
    session.env["PJRT_DEVICE"] = "TPU"
    _hardware_session(
        session, "tpu", ("fabric-xla",), ("torch==2.9.0", "torch_xla[tpu]==2.9.0")
    )  # libtpu comes with [tpu]


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks: ratios against raw PyTorch (and Lightning Fabric / Accelerate with FABRIC_BENCH_PEERS=1)."""
    peers = ("lightning-fabric", "accelerate") if os.environ.get("FABRIC_BENCH_PEERS") == "1" else ()
    # fabric-cuda: the GPU rows (16-mixed with GradScaler in bench_calls, bench_step_gpu) where CUDA exists,
    # with a CUDA build of torch from FABRIC_CUDA_TORCH as in the cuda session. FABRIC_BENCH_DEEPSPEED=1: the
    # DeepSpeed row of bench_calls (real DeepSpeed on its CPU accelerator).
    deepspeed = os.environ.get("FABRIC_BENCH_DEEPSPEED") == "1"
    backends = ("fabric-cuda", *(("fabric-deepspeed",) if deepspeed else ()))
    _install(session, *backends, extra=("numpy", *peers), torch=(os.environ.get("FABRIC_CUDA_TORCH", TORCH),))
    if deepspeed:
        session.env.setdefault("DS_ACCELERATOR", "cpu")
        session.env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(nox.options.envdir) / "torch_extensions"))
    session.run("python", "benchmarks/run_all.py", *session.posargs)


# command -> Debian package of the `cluster` leg (bsdutils' `script` gives `srun --pty` a terminal)
CLUSTER_COMMANDS = {
    "munged": "munge",
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "srun": "slurm-client",
    "mpirun": "openmpi-bin",
    "script": "bsdutils",
}


def _missing_cluster_packages() -> list[str]:
    import shutil

    return sorted({package for command, package in CLUSTER_COMMANDS.items() if shutil.which(command) is None})


def _kill_processes_of_run(marker: str) -> None:
    """SIGKILL every process (daemon, job step, rank) that inherited this run's marker variable."""
    import signal

    entry_bytes = marker.encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if entry_bytes in (entry / "environ").read_bytes().split(b"\0"):
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue


@nox.session
def cluster(session: nox.Session) -> None:
    """Real cluster software here: a one-node SLURM cluster (srun, sbatch, requeue), Open MPI mpirun, 2 loopback nodes.

    As root it installs SLURM 22.05, munge and Open MPI with apt-get; otherwise, without them, it skips
    (fails under FABRIC_REQUIRE_HARDWARE=1). Every daemon and job it starts is stopped when it ends.
    """
    import shutil
    import uuid

    missing = _missing_cluster_packages()
    if missing and sys.platform == "linux" and os.geteuid() == 0 and shutil.which("apt-get"):
        apt_env = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run("apt-get", "update", "-qq", external=True, env=apt_env)
        session.run("apt-get", "install", "-y", "-qq", *missing, external=True, env=apt_env)
        missing = _missing_cluster_packages()
    if missing or sys.platform != "linux" or os.geteuid() != 0:
        why = (
            f"SLURM, munge and Open MPI ({', '.join(missing)} missing; as root on Debian/Ubuntu this leg installs them)"
            if missing
            else "root rights (the test cluster runs slurmd and munged as root)"
        )
        _require_or_skip(session, False, why)
    _install(session, extra=("numpy", "scikit-learn"))
    marker = f"FABRIC_CLUSTER_RUN={uuid.uuid4().hex}"
    session.env.update({"FABRIC_CLUSTER_LEG": "1", marker.split("=")[0]: marker.split("=")[1]})
    try:
        _pytest(session, "integration_tests/cluster")
    finally:
        _kill_processes_of_run(marker)  # anything a killed pytest could not stop itself


@nox.session
def trackers(session: nox.Session) -> None:
    """fabric-loggers' experiment trackers (MLflow, W&B, Comet, DVCLive) against the real libraries, offline: no network."""
    session.env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_ENABLE_ASYNC_LOGGING": "false"})
    session.env["DVC_NO_ANALYTICS"] = "1"
    _install(session, "fabric-loggers", extra=("numpy",))
    # The tracker libraries through fabric-loggers' own extras, as users install them (quick once present).
    _pip_install(session, TORCH, "-e", f"{_pkg('fabric-loggers')}[mlflow,wandb,comet,dvclive]")
    _pytest(session, "packages/fabric-loggers/tests", markers="trackers")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy with the root pyproject's config: strict on the Fabric facade and fabric_core.plugins (the backend contract)."""
    _install(
        session,
        "fabric-cuda",
        "fabric-deepspeed",
        "fabric-loggers",
        "fabric-xla",
        extra=("mypy==2.4.1", "numpy", "fsspec"),
    )
    # torch_xla is not installed here (it needs its own torch): the root config's ignore_missing_imports covers it.
    packages = ("fabric_core", "fabric_cuda", "fabric_deepspeed", "fabric_loggers", "fabric_xla")
    session.run("mypy", *(arg for name in packages for arg in ("-p", name)), *session.posargs)
