"""Command-line options, their ini equivalents, and validated settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pytest

from .backends.hf import DEVICE_MAPS, DTYPES
from .serve import DEFAULT_READY_TIMEOUT_S as DEFAULT_SERVE_TIMEOUT_S
from .baseline import BaselineError, Bound, check_name, parse_bounds
from .budgets import Budget, BudgetError, parse_budgets
from .meters import MeterOptions, ShortWindows
from .meters.estimate import DEFAULT_CPU_WATTS_PER_CORE
from .meters.nvml import DEFAULT_SAMPLE_HZ
from .meters.rapl import DEFAULT_POWERCAP_ROOT
from .runner import GenerationConfig
from .tasks.humaneval import DEFAULT_MAX_NEW_TOKENS as DEFAULT_HUMANEVAL_TOKENS
from .tasks.humaneval import DEFAULT_STOP, PROMPT_STYLES, HumanEvalSettings, parse_task_selection
from .tasks.longbench import ENV_DIR, LongBenchSettings

DEFAULT_MODEL = "builtin:tiny"
DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_SANDBOX_WORKERS = max(1, min(4, os.cpu_count() or 1))
BABBLING_MODES = ("off", "stop", "tests", "both")


@dataclass(frozen=True)
class _Option:
    flag: str
    ini: str
    default: Any
    help: str
    metavar: str


OPTIONS = [
    _Option("--energy-meter", "energy_meter", "auto",
            "energy source: auto (every GPU and CPU sensor found, plus --energy-prometheus-url when "
            "given, else estimate), nvml, rapl, prometheus, estimate, or a meter another plugin "
            "registers (default: auto)", "NAME"),
    _Option("--energy-model", "energy_model", DEFAULT_MODEL,
            "model under test: a local checkpoint directory, a hub id, or builtin:tiny, "
            "a small model built offline (default: builtin:tiny)", "PATH|HUB_ID"),
    _Option("--energy-prometheus-url", "energy_prometheus_url", "",
            "a Prometheus endpoint exposing a cumulative energy counter, for --energy-meter=prometheus "
            "(or auto): the DCGM exporter's, Kepler's, node_exporter's /metrics", "URL"),
    _Option("--energy-prometheus-metric", "energy_prometheus_metric", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
            "the counter's metric name; each of its series is a device "
            "(default: DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION)", "NAME"),
    _Option("--energy-prometheus-period", "energy_prometheus_period", 1.0,
            "seconds between the exporter's updates of the counter (its collection interval; default: 1)",
            "SECONDS"),
    _Option("--energy-prometheus-unit", "energy_prometheus_unit", "",
            "the counter's unit: J, mJ or uJ (default: mJ for DCGM's metric, J otherwise)", "UNIT"),
    _Option("--energy-served-model", "energy_served_model", "",
            "with --energy-model=openai:URL, the served model's name (default: the one /v1/models lists)",
            "NAME"),
    _Option("--energy-api-key-env", "energy_api_key_env", "OPENAI_API_KEY",
            "environment variable holding the API key of a served model; the key never appears in "
            "output (default: OPENAI_API_KEY)", "VAR"),
    _Option("--energy-serve", "energy_serve", "",
            "start the model server for the run with this command line (its own process group; "
            "stopped at the end, also on Ctrl-C); --energy-model=openai:URL says where it listens", "COMMAND"),
    _Option("--energy-serve-timeout", "energy_serve_timeout", DEFAULT_SERVE_TIMEOUT_S,
            "seconds --energy-serve's server may take to answer /health (default: 300)", "SECONDS"),
    _Option("--energy-server-pid", "energy_server_pid", "",
            "pid of an already running server on this host: the estimate meter follows its process "
            "tree's CPU time", "PID"),
    _Option("--energy-device", "energy_device", "auto",
            "device to run the model on: auto, cpu, cuda, cuda:N (default: auto)", "DEVICE"),
    _Option("--energy-device-map", "energy_device_map", "",
            "spread a model too large for one GPU over the visible GPUs (transformers' device_map; "
            "needs accelerate): " + ", ".join(DEVICE_MAPS) + " (default: off, the whole model on "
            "--energy-device)", "MAP"),
    _Option("--energy-dtype", "energy_dtype", "auto",
            "model weights dtype: " + ", ".join(DTYPES) + " (default: auto = float32 on CPU, "
            "the checkpoint's dtype on GPU)", "DTYPE"),
    _Option("--energy-cpu-watts", "energy_cpu_watts", DEFAULT_CPU_WATTS_PER_CORE,
            "watts per busy CPU core for the estimate meter "
            f"(default: {DEFAULT_CPU_WATTS_PER_CORE:g})", "W"),
    _Option("--energy-max-new-tokens", "energy_max_new_tokens", DEFAULT_MAX_NEW_TOKENS,
            f"default cap on generated tokens (default: {DEFAULT_MAX_NEW_TOKENS})", "N"),
    _Option("--energy-temperature", "energy_temperature", 0.0,
            "sampling temperature; 0 is greedy decoding (default: 0)", "T"),
    _Option("--energy-top-p", "energy_top_p", 1.0,
            "nucleus sampling mass when temperature > 0 (default: 1.0)", "P"),
    _Option("--energy-seed", "energy_seed", 0, "seed for sampling (default: 0)", "N"),
    _Option("--energy-power-sample-hz", "energy_power_sample_hz", DEFAULT_SAMPLE_HZ,
            "rate of the NVML sampler that places the energy counter's updates in time and reads "
            f"instant power; 0 reads at window edges only (default: {DEFAULT_SAMPLE_HZ:g})", "HZ"),
    _Option("--energy-short-windows", "energy_short_windows", "auto",
            "how phases too short for the energy counter are measured: auto (repeat a phase whose "
            "bound exceeds --energy-max-bound), repeat (always repeat prefills), split (never repeat; "
            "faster, wider bounds) (default: auto)", "MODE"),
    _Option("--energy-max-bound", "energy_max_bound", 2.0,
            "percent of a phase's energy its error bound may reach before auto repeats it (default: 2)",
            "PCT"),
    _Option("--energy-repeat-seconds", "energy_repeat_seconds", 1.0,
            "shortest window of back-to-back repetitions of a short phase (default: 1.0)", "SECONDS"),
    _Option("--energy-mark-bound", "energy_mark_bound", 5.0,
            "mark figures in the table whose error bound exceeds this percent of the figure "
            "(default: 5)", "PCT"),
    _Option("--energy-rapl-root", "energy_rapl_root", DEFAULT_POWERCAP_ROOT,
            f"powercap directory of the RAPL meter (default: {DEFAULT_POWERCAP_ROOT})", "DIR"),
    _Option("--energy-json", "energy_json", None,
            "write every result and the session metadata as JSON to PATH", "PATH"),
    _Option("--energy-markdown", "energy_markdown", None,
            "write the energy report as Markdown to PATH; when GITHUB_STEP_SUMMARY is set it is "
            "appended there as well", "PATH"),
    _Option("--energy-plot", "energy_plot", None,
            "write PNG charts to DIR: prefill/decode energy per test, babbling off vs on "
            "(needs matplotlib: pip install 'pytest-llm-energy[plot]')", "DIR"),
    _Option("--humaneval-tasks", "humaneval_tasks", None,
            "HumanEval tasks to run, overriding the humaneval marker: all, N, N-M, lists "
            "such as 0-9,42 (default: the marker's tasks, else all)", "SPEC"),
    _Option("--humaneval-max-new-tokens", "humaneval_max_new_tokens", DEFAULT_HUMANEVAL_TOKENS,
            f"cap on generated tokens per HumanEval case (default: {DEFAULT_HUMANEVAL_TOKENS})", "N"),
    _Option("--humaneval-stop", "humaneval_stop", None,
            "comma-separated stop strings that end a base model's completion when it is scored, "
            "with Python escapes (default: the bigcode-evaluation-harness list "
            + ",".join(s.encode("unicode_escape").decode() for s in DEFAULT_STOP) + ")", "LIST"),
    _Option("--energy-prompt-style", "energy_prompt_style", "base",
            "base: the raw prompt; chat: the tokenizer's chat template around an instruction, "
            "code taken from the reply's fenced block (default: base)", "STYLE"),
    _Option("--babbling", "babbling", "off",
            "babbling suppression: off, stop (stop strings and end of function), tests (stop once "
            "the code so far passes the task's tests) or both (every case with off and with tests) "
            "(default: off)", "MODE"),
    _Option("--energy-samples", "energy_samples", 1,
            "samples per HumanEval task; above 1 reports unbiased pass@k and needs "
            "--energy-temperature above 0 (default: 1)", "N"),
    _Option("--min-pass-at-1", "min_pass_at_1", None,
            "fail the session when HumanEval pass@1 of any babbling mode is below this (0-1)", "P"),
    _Option("--babbling-max-accuracy-drop", "babbling_max_accuracy_drop", 0.0,
            "with --babbling=both, fail the session when suppression lowers pass@1 by more than "
            "this (default: 0)", "P"),
    _Option("--energy-repeat", "energy_repeat", 1,
            "measure every generation N times after one unrecorded warm-up; reports show medians "
            "(default: 1)", "N"),
    _Option("--energy-repeat-order", "energy_repeat_order", "rounds",
            "how --energy-repeat runs repetitions: rounds (each repetition its own test item, the "
            "suite run once per round, so slow drift is not shared by one test's repetitions) or "
            "back-to-back (inside one test item) (default: rounds)", "ORDER"),
    _Option("--energy-compare-fail", "energy_compare_fail", None,
            "fail the session on regressions against the compared run, e.g. "
            "decode_j_per_token:10%,total_j:15%,pass_at_1:-0.02 (every bounded comparison of the "
            "session is judged together, the chance that an unchanged run fails held at 1%)", "EXPR"),
    _Option("--energy-compare-tolerance", "energy_compare_tolerance", 5.0,
            "a uniform shift of the whole run up to this percent is the machine's: reported, and the "
            "run's shift is judged against the larger of it and the bound (default: 5)", "PCT"),
    _Option("--energy-compare-detect", "energy_compare_detect", 15.0,
            "the regression of one test, in percent, whose chance of being caught the comparison "
            "reports, with the repetitions it would need (default: 15)", "PCT"),
    _Option("--energy-idle", "energy_idle", 0.0,
            "measure idle power for this many seconds before the first test; reports then show net "
            "energy (gross minus idle power x time) too (default: 0, off)", "SECONDS"),
    _Option("--energy-budget-basis", "energy_budget_basis", "gross",
            "check budgets against gross or net energy (net needs --energy-idle) (default: gross)", "BASIS"),
    _Option("--longbench-dir", "longbench_dir", None,
            "directory with LongBench v1 code task files (lcc.jsonl, repobench-p.jsonl); default: "
            "$LONGBENCH_DIR", "DIR"),
    _Option("--longbench-max-length", "longbench_max_length", None,
            "cut LongBench prompts longer than N tokens in the middle, as LongBench does (default: the "
            "model's context minus the 64 generated tokens)", "N"),
    _Option("--min-code-sim", "min_code_sim", None,
            "fail the session when the mean LongBench code similarity is below this (0-1)", "S"),
    _Option("--sandbox-workers", "sandbox_workers", DEFAULT_SANDBOX_WORKERS,
            f"warm sandbox processes that check generated code (default: {DEFAULT_SANDBOX_WORKERS})", "N"),
    _Option("--sandbox-timeout", "sandbox_timeout", 3.0,
            "seconds a check of generated code may take (default: 3)", "S"),
    _Option("--sandbox-memory-mb", "sandbox_memory_mb", 1024,
            "address-space limit of checked code in MiB (default: 1024)", "MB"),
    _Option("--sandbox-isolation", "sandbox_isolation", "auto",
            "auto (bubblewrap when usable), bwrap (required) or subprocess (default: auto)", "MODE"),
]


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("llm-energy", "energy regression testing of LLMs (pytest-llm-energy)")
    group.addoption(
        "--energy-budget", dest="energy_budget", action="append", default=None, metavar="EXPR",
        help="energy budget, repeatable or comma-separated: 2.5kJ (the run), per-test=20J, prefill=2J, "
             "decode=15J, decode-per-token=4mJ, suite:humaneval=1kJ, marker:NAME=500J; units J, kJ, mJ, "
             "Wh, kWh. A test over a per-test budget fails; a run over a run budget fails the session",
    )
    parser.addini("energy_budget", help="energy budgets, one expression per line", type="linelist", default=[])
    group.addoption(
        "--energy-save", dest="energy_save", default=None, metavar="NAME",
        help="save this run as a baseline: .llm-energy/NNNN_NAME.json under the rootdir, with a machine "
             "fingerprint",
    )
    group.addoption(
        "--energy-compare", dest="energy_compare", nargs="?", const="latest", default=None, metavar="REF",
        help="compare this run with a saved one: latest (the default), a number, a name (its latest save) "
             "or a file",
    )
    parser.addini("energy_compare", help="saved run to compare with (see --energy-compare)", default=None)
    for opt in OPTIONS:
        dest = opt.flag.lstrip("-").replace("-", "_")
        # argparse formats help with %: a literal percent sign must be doubled.
        group.addoption(opt.flag, dest=dest, default=None, metavar=opt.metavar, help=opt.help.replace("%", "%%"))
        parser.addini(opt.ini, help=opt.help.split(" (default")[0],
                      default=None if opt.default is None else str(opt.default))


def _raw(config: pytest.Config, flag: str) -> tuple[str, Any]:
    """Value of an option: command line first, then ini, then the default."""
    opt = next(o for o in OPTIONS if o.flag == flag)
    value = config.getoption(opt.flag.lstrip("-").replace("-", "_"))
    if value is None:
        value = config.getini(opt.ini)
    return opt.flag, value


def _convert(config: pytest.Config, flag: str, kind: Callable[[str], Any], check: Callable[[Any], bool],
             expectation: str, optional: bool = False) -> Any:
    """The option's value converted and checked; with ``optional``, None when it is unset."""
    name, value = _raw(config, flag)
    if optional and value in (None, ""):
        return None
    try:
        converted = kind(str(value).strip())
    except ValueError:
        raise pytest.UsageError(f"{name}={value!r}: expected {expectation}") from None
    if not check(converted):
        raise pytest.UsageError(f"{name}={value!r}: expected {expectation}")
    return converted


def _output_path(config: pytest.Config, flag: str) -> Optional[str]:
    """An absolute file path to write, checked before any test runs."""
    name, value = _raw(config, flag)
    if not value:
        return None
    path = os.path.abspath(os.path.expanduser(str(value)))
    parent = os.path.dirname(path)
    if os.path.isdir(path):
        raise pytest.UsageError(f"{name}={path}: is a directory, give a file path")
    if os.path.exists(parent) and not os.access(parent, os.W_OK):
        raise pytest.UsageError(f"{name}={path}: directory {parent} is not writable")
    return path


def _plot_dir(config: pytest.Config) -> Optional[str]:
    name, value = _raw(config, "--energy-plot")
    if not value:
        return None
    path = os.path.abspath(os.path.expanduser(str(value)))
    if os.path.exists(path) and not os.path.isdir(path):
        raise pytest.UsageError(f"{name}={path}: is a file, give a directory")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise pytest.UsageError(f"{name} needs matplotlib: pip install 'pytest-llm-energy[plot]'") from None
    return path


def _choice(config: pytest.Config, flag: str, choices: tuple[str, ...]) -> str:
    name, value = _raw(config, flag)
    value = str(value).strip()
    if value not in choices:
        raise pytest.UsageError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class Settings:
    meter: str
    model: str
    device: str
    dtype: str
    meter_options: MeterOptions
    generation: GenerationConfig
    json_path: Optional[str]
    device_map: str = ""
    served_model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    serve: str = ""
    serve_timeout: float = DEFAULT_SERVE_TIMEOUT_S
    server_pid: Optional[int] = None
    humaneval_tasks: Optional[str] = None
    humaneval: HumanEvalSettings = HumanEvalSettings()
    babbling: str = "off"
    samples: int = 1
    min_pass_at_1: Optional[float] = None
    babbling_max_accuracy_drop: float = 0.0
    sandbox_workers: int = DEFAULT_SANDBOX_WORKERS
    sandbox_timeout: float = 3.0
    sandbox_memory_mb: int = 1024
    sandbox_isolation: str = "auto"
    markdown_path: Optional[str] = None
    plot_dir: Optional[str] = None
    budgets: tuple[Budget, ...] = ()
    idle_seconds: float = 0.0
    budget_basis: str = "gross"
    repeat: int = 1
    longbench_dir: Optional[str] = None
    longbench: LongBenchSettings = LongBenchSettings()
    min_code_sim: Optional[float] = None
    save_name: Optional[str] = None
    compare_ref: Optional[str] = None
    compare_bounds: tuple[Bound, ...] = ()
    mark_bound: float = 0.05
    compare_tolerance: float = 0.05
    repeat_order: str = "rounds"
    compare_detect: float = 0.15

    @property
    def babbling_modes(self) -> tuple[str, ...]:
        return ("off", "tests") if self.babbling == "both" else (self.babbling,)

    @classmethod
    def from_config(cls, config: pytest.Config) -> "Settings":
        cpu_watts = _convert(config, "--energy-cpu-watts", float, lambda v: v > 0, "a positive number of watts")
        sample_hz = _convert(config, "--energy-power-sample-hz", float, lambda v: v >= 0,
                             "a rate in Hz >= 0")
        short_windows = ShortWindows(
            mode=_choice(config, "--energy-short-windows", ("auto", "repeat", "split")),
            max_bound=_convert(config, "--energy-max-bound", float, lambda v: 0 < v <= 100,
                               "a percentage in (0, 100]") / 100,
            min_repeat_s=_convert(config, "--energy-repeat-seconds", float, lambda v: 0 < v <= 60,
                                  "a number of seconds in (0, 60]"),
        )
        mark_bound = _convert(config, "--energy-mark-bound", float, lambda v: v >= 0,
                              "a percentage >= 0") / 100
        max_new = _convert(config, "--energy-max-new-tokens", int, lambda v: v >= 1, "an integer >= 1")
        temperature = _convert(config, "--energy-temperature", float, lambda v: v >= 0, "a number >= 0")
        top_p = _convert(config, "--energy-top-p", float, lambda v: 0 < v <= 1, "a number in (0, 1]")
        seed = _convert(config, "--energy-seed", int, lambda v: True, "an integer")
        dtype = _raw(config, "--energy-dtype")[1]
        if dtype not in DTYPES:
            raise pytest.UsageError(f"--energy-dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
        device = str(_raw(config, "--energy-device")[1]).strip()
        if not (device in ("auto", "cpu", "cuda") or
                (device.startswith("cuda:") and device[5:].isdigit())):
            raise pytest.UsageError(f"--energy-device={device!r}: expected auto, cpu, cuda or cuda:N")
        device_map = str(_raw(config, "--energy-device-map")[1]).strip()
        if device_map and device_map not in DEVICE_MAPS:
            raise pytest.UsageError(f"--energy-device-map={device_map!r}: expected one of {', '.join(DEVICE_MAPS)}")
        if device_map and device not in ("auto", "cuda"):
            raise pytest.UsageError(f"--energy-device-map={device_map} spreads the model over the visible GPUs; "
                                    f"it does not combine with --energy-device={device} (choose GPUs with "
                                    "CUDA_VISIBLE_DEVICES)")
        model = str(_raw(config, "--energy-model")[1]).strip()
        serve = str(_raw(config, "--energy-serve")[1]).strip()
        if serve and not model.startswith("openai:"):
            raise pytest.UsageError("--energy-serve starts a server: say where it listens with "
                                    "--energy-model=openai:http://127.0.0.1:PORT/v1")
        workers = getattr(config.option, "numprocesses", None)
        if serve and workers not in (None, 0, "0"):
            # Each xdist worker loads the model: each would start its own server on one port.
            raise pytest.UsageError("--energy-serve starts one server per run; it does not combine with "
                                    "pytest-xdist (-n): start the server yourself and attach with "
                                    "--energy-model=openai:URL")
        serve_timeout = _convert(config, "--energy-serve-timeout", float, lambda v: v > 0, "seconds above 0")
        server_pid_text = str(_raw(config, "--energy-server-pid")[1]).strip()
        if server_pid_text and not (server_pid_text.isdigit() and int(server_pid_text) > 0):
            raise pytest.UsageError(f"--energy-server-pid={server_pid_text!r}: expected a process id")
        json_path = _output_path(config, "--energy-json")
        humaneval_tasks = _raw(config, "--humaneval-tasks")[1]
        if humaneval_tasks:
            try:
                parse_task_selection(str(humaneval_tasks))
            except ValueError as exc:
                raise pytest.UsageError(f"--humaneval-tasks={humaneval_tasks!r}: {exc}") from None
        stop_raw = _raw(config, "--humaneval-stop")[1]
        stops = DEFAULT_STOP
        if stop_raw:
            try:
                stops = tuple(p.encode("latin-1", "backslashreplace").decode("unicode_escape")
                              for p in str(stop_raw).split(",") if p)
            except UnicodeDecodeError as exc:
                raise pytest.UsageError(f"--humaneval-stop={stop_raw!r}: {exc.reason}") from None
        style = _choice(config, "--energy-prompt-style", PROMPT_STYLES)
        babbling = _choice(config, "--babbling", BABBLING_MODES)
        samples = _convert(config, "--energy-samples", int, lambda v: v >= 1, "an integer >= 1")
        if samples > 1 and temperature == 0:
            raise pytest.UsageError(
                f"--energy-samples={samples} needs sampling: set --energy-temperature above 0 "
                "(0.8 with --energy-top-p=0.95 is common for pass@k)"
            )
        min_pass = _convert(config, "--min-pass-at-1", float, lambda v: 0 <= v <= 1, "a number in [0, 1]",
                            optional=True)
        budget_values = config.getoption("energy_budget") or config.getini("energy_budget") or []
        try:
            budgets = tuple(parse_budgets(budget_values))
        except BudgetError as exc:
            raise pytest.UsageError(f"--energy-budget: {exc}") from None
        idle_seconds = _convert(config, "--energy-idle", float, lambda v: 0 <= v <= 600, "seconds in [0, 600]")
        basis = _choice(config, "--energy-budget-basis", ("gross", "net"))
        if basis == "net" and idle_seconds == 0:
            raise pytest.UsageError("--energy-budget-basis=net needs --energy-idle=SECONDS to measure idle power")
        longbench_dir = _raw(config, "--longbench-dir")[1] or os.environ.get(ENV_DIR) or None
        if longbench_dir:
            longbench_dir = os.path.abspath(os.path.expanduser(str(longbench_dir)))
            if not os.path.isdir(longbench_dir):
                raise pytest.UsageError(f"--longbench-dir={longbench_dir}: no such directory "
                                        "(it should hold lcc.jsonl and repobench-p.jsonl)")
        longbench_max_length = _convert(config, "--longbench-max-length", int, lambda v: v >= 16,
                                        "an integer >= 16", optional=True)
        min_code_sim = _convert(config, "--min-code-sim", float, lambda v: 0 <= v <= 1, "a number in [0, 1]",
                                optional=True)
        save_name = config.getoption("energy_save")
        if save_name is not None:
            try:
                check_name(save_name)
            except BaselineError as exc:
                raise pytest.UsageError(f"--energy-save: {exc}") from None
        compare_ref = config.getoption("energy_compare") or config.getini("energy_compare") or None
        bounds_text = _raw(config, "--energy-compare-fail")[1]
        compare_bounds: tuple[Bound, ...] = ()
        if bounds_text:
            try:
                compare_bounds = tuple(parse_bounds(str(bounds_text)))
            except BaselineError as exc:
                raise pytest.UsageError(f"--energy-compare-fail={bounds_text!r}: {exc}") from None
            if compare_ref is None:
                raise pytest.UsageError("--energy-compare-fail needs a run to compare with: add --energy-compare")
        compare_tolerance = _convert(config, "--energy-compare-tolerance", float, lambda v: 0 <= v <= 100,
                                     "a percentage in [0, 100]") / 100
        compare_detect = _convert(config, "--energy-compare-detect", float, lambda v: 0 < v <= 1000,
                                  "a percentage above 0") / 100
        return cls(
            meter=str(_raw(config, "--energy-meter")[1]).strip(),
            model=model,
            device=device,
            dtype=dtype,
            device_map=device_map,
            served_model=str(_raw(config, "--energy-served-model")[1]).strip(),
            serve=serve,
            serve_timeout=serve_timeout,
            server_pid=int(server_pid_text) if server_pid_text else None,
            api_key_env=str(_raw(config, "--energy-api-key-env")[1]).strip(),
            meter_options=MeterOptions(
                cpu_watts=cpu_watts,
                rapl_root=str(_raw(config, "--energy-rapl-root")[1]),
                sample_hz=sample_hz,
                short_windows=short_windows,
                prometheus_url=str(_raw(config, "--energy-prometheus-url")[1]).strip(),
                prometheus_metric=str(_raw(config, "--energy-prometheus-metric")[1]).strip(),
                prometheus_period_s=_convert(config, "--energy-prometheus-period", float, lambda v: v > 0,
                                             "seconds above 0"),
                prometheus_unit=str(_raw(config, "--energy-prometheus-unit")[1]).strip(),
            ),
            mark_bound=mark_bound,
            generation=GenerationConfig(
                max_new_tokens=max_new, temperature=temperature, top_p=top_p, seed=seed
            ),
            json_path=json_path or None,
            humaneval_tasks=str(humaneval_tasks) if humaneval_tasks else None,
            humaneval=HumanEvalSettings(
                max_new_tokens=_convert(config, "--humaneval-max-new-tokens", int, lambda v: v >= 1,
                                        "an integer >= 1"),
                stop=stops,
                prompt_style=style,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
            ),
            babbling=babbling,
            samples=samples,
            min_pass_at_1=min_pass,
            babbling_max_accuracy_drop=_convert(config, "--babbling-max-accuracy-drop", float,
                                                lambda v: 0 <= v <= 1, "a number in [0, 1]"),
            sandbox_workers=_convert(config, "--sandbox-workers", int, lambda v: v >= 1, "an integer >= 1"),
            sandbox_timeout=_convert(config, "--sandbox-timeout", float, lambda v: v > 0, "a positive number"),
            sandbox_memory_mb=_convert(config, "--sandbox-memory-mb", int, lambda v: v >= 64,
                                       "an integer >= 64"),
            sandbox_isolation=_choice(config, "--sandbox-isolation", ("auto", "bwrap", "subprocess")),
            markdown_path=_output_path(config, "--energy-markdown"),
            plot_dir=_plot_dir(config),
            budgets=budgets,
            idle_seconds=idle_seconds,
            budget_basis=basis,
            repeat=_convert(config, "--energy-repeat", int, lambda v: 1 <= v <= 1000, "an integer in [1, 1000]"),
            longbench_dir=longbench_dir,
            longbench=LongBenchSettings(max_length=longbench_max_length),
            min_code_sim=min_code_sim,
            save_name=save_name,
            compare_ref=compare_ref,
            compare_bounds=compare_bounds,
            compare_tolerance=compare_tolerance,
            repeat_order=_choice(config, "--energy-repeat-order", ("rounds", "back-to-back")),
            compare_detect=compare_detect,
        )
