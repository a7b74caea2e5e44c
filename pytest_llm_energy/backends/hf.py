"""The model under test as a transformers causal LM, driven token by token."""

from __future__ import annotations

import hashlib
import inspect
import os
from typing import Any, Optional, Sequence

from .base import Backend, BackendLoadError, Decoding
from .tiny import BUILTIN_PREFIX, TINY_NAME, TINY_REVISION, tiny_model_dir

DTYPES = ("auto", "float32", "float16", "bfloat16")
# transformers' device_map strategies (accelerate places the layers).
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def resolve_device(requested: str) -> str:
    """``auto`` → ``cuda`` when a GPU is usable, else ``cpu``; checks ``cuda[:N]``."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" or requested.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BackendLoadError(
                f"--energy-device={requested} but torch sees no CUDA GPU; "
                "use --energy-device=cpu or install a CUDA build of torch"
            )
        index = requested.partition(":")[2]
        if index:
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise BackendLoadError(
                    f"--energy-device={requested}: torch sees {torch.cuda.device_count()} GPU(s)"
                )
        return requested
    raise BackendLoadError(f"--energy-device={requested!r} is not one of auto, cpu, cuda, cuda:N")


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_HASH_EDGE_BYTES = 1 << 20


def weights_fingerprint(directory: str) -> Optional[str]:
    """A quick identity of a checkpoint's weights: names, sizes, first and last MiB.

    Hashing multi-GB weights in full on every run would cost minutes; these
    parts change whenever the weights are retrained, re-quantised or swapped.
    """
    if not os.path.isdir(directory):
        return None
    digest = hashlib.sha256()
    found = False
    for name in sorted(os.listdir(directory)):
        if not name.endswith(WEIGHT_SUFFIXES):
            continue
        path = os.path.join(directory, name)
        size = os.path.getsize(path)
        digest.update(f"{name}\0{size}\0".encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(_HASH_EDGE_BYTES))
            if size > 2 * _HASH_EDGE_BYTES:
                handle.seek(-_HASH_EDGE_BYTES, os.SEEK_END)
                digest.update(handle.read())
        found = True
    return "sha256:" + digest.hexdigest()[:16] if found else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


HUB_PROBE_TIMEOUT_S = 3.0


def _offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> str:
    """Where huggingface_hub keeps downloads, read now (its constants are read at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def hub_endpoint() -> str:
    if os.environ.get("HF_ENDPOINT"):
        return os.environ["HF_ENDPOINT"].rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def _hub_reachable(repo_id: str) -> bool:
    """Whether the hub answers at all within a few seconds (any HTTP status counts; proxies honoured)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{hub_endpoint()}/api/models/{repo_id}", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except urllib.error.HTTPError:
        return True  # 401, 404: it answered
    except (OSError, ValueError):
        return False


def hub_source(spec: str) -> tuple[dict[str, Any], Optional[str]]:
    """``from_pretrained`` options for a hub id and its cached snapshot, or a one-line error within seconds.

    The local cache comes first: a cached model loads without touching the
    network. An uncached one is downloaded only when the hub answers; with
    ``HF_HUB_OFFLINE`` (or no network) the error says at once that the model is
    neither local nor cached, instead of transformers' retries (about 47 s).
    """
    from huggingface_hub import try_to_load_from_cache

    cache_dir = hub_cache_dir()
    try:
        cached = try_to_load_from_cache(spec, "config.json", cache_dir=cache_dir)
    except ValueError as exc:  # not a valid repo id
        raise BackendLoadError(f"--energy-model={spec}: not a model directory or a hub id ({_first_line(exc)})") from None
    if isinstance(cached, str):
        return {"local_files_only": True, "cache_dir": cache_dir}, os.path.dirname(cached)
    where = f"not a local directory and not in the Hugging Face cache ({cache_dir})"
    if _offline():
        raise BackendLoadError(f"--energy-model={spec}: {where}, and HF_HUB_OFFLINE is set; "
                               f"download it first (hf download {spec}) or pass a local path")
    if not _hub_reachable(spec):
        raise BackendLoadError(f"--energy-model={spec}: {where}, and {hub_endpoint()} cannot be reached; "
                               f"download it first (hf download {spec}) or pass a local path")
    return {"cache_dir": cache_dir}, None


def spanned_devices(device_map: Optional[dict[str, Any]]) -> list[str]:
    """The devices an accelerate ``hf_device_map`` puts layers on, in CUDA order (GPU ints become cuda:N)."""
    if not device_map:
        return []
    names = set()
    for place in device_map.values():
        if isinstance(place, int) or (isinstance(place, str) and place.isdigit()):
            names.add(f"cuda:{int(place)}")
        else:
            names.add(str(place))
    return sorted(names, key=lambda n: (not n.startswith("cuda"), int(n[5:]) if n[5:].isdigit() else 0, n))


def cache_argument(model: Any) -> str:
    """The keyword a model's ``forward`` takes its KV cache by.

    transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name
    warns, and goes in 5.40); 4.x knows only the old one. The output carries
    the cache under the same name.
    """
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"


class HFDecoding(Decoding):
    def __init__(self, backend: "HFBackend") -> None:
        self._model = backend.model
        self._device = backend.torch_device
        self._torch = backend.torch
        self._cache_key = backend.cache_key
        self._cache: Any = None

    def _forward(self, input_ids: Any, **extra: Any) -> Any:
        with self._torch.inference_mode():
            out = self._model(input_ids=input_ids, use_cache=True, **{self._cache_key: self._cache}, **extra)
        self._cache = out[self._cache_key]
        return out.logits[0, -1]

    def prefill(self, prompt_ids: Sequence[int]) -> Any:
        from transformers import DynamicCache

        self._cache = DynamicCache()
        return self._forward(self._torch.tensor([list(prompt_ids)], device=self._device), logits_to_keep=1)

    def step(self, token_id: int) -> Any:
        return self._forward(self._torch.tensor([[token_id]], device=self._device))


class HFBackend(Backend):
    def __init__(self, model: Any, tokenizer: Any, model_id: str, device: str, revision: str = "",
                 weights: Optional[str] = None) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.device = device
        self.revision = revision
        self.weights = weights
        self.torch_device = torch.device(device)
        self.cache_key = cache_argument(model)
        self.spans = spanned_devices(getattr(model, "hf_device_map", None)) or [device]
        eos = tokenizer.eos_token_id
        config_eos = getattr(model.generation_config, "eos_token_id", None)
        ids: set[int] = set()
        for value in (eos, config_eos):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(v for v in value if isinstance(v, int))
        self._eos = frozenset(ids)

    @classmethod
    def load(cls, spec: str, device: str = "auto", dtype: str = "auto", device_map: str = "") -> "HFBackend":
        """Load ``builtin:tiny``, a local checkpoint directory, or a hub id.

        ``device_map`` spreads the model over the visible GPUs instead of
        putting it on ``device``. Every failure becomes a
        :class:`BackendLoadError` of one line.
        """
        if dtype not in DTYPES:
            raise BackendLoadError(f"--energy-dtype={dtype!r} is not one of {', '.join(DTYPES)}")
        if device_map:
            if device_map not in DEVICE_MAPS:
                raise BackendLoadError(f"--energy-device-map={device_map!r} is not one of {', '.join(DEVICE_MAPS)}")
            try:
                import accelerate  # noqa: F401  (transformers places the layers with it)
            except ImportError:
                raise BackendLoadError(f"--energy-device-map={device_map} needs accelerate: "
                                       "pip install 'pytest-llm-energy[multi-gpu]'") from None
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise BackendLoadError(
                f"the transformers backend needs torch and transformers ({exc}); "
                "pip install 'pytest-llm-energy[hf]'"
            ) from None
        resolved = resolve_device(device)
        revision = ""
        hub_options: dict[str, Any] = {}
        weights_dir: Optional[str] = None
        if spec.startswith(BUILTIN_PREFIX):
            if spec != BUILTIN_PREFIX + TINY_NAME:
                raise BackendLoadError(f"unknown built-in model {spec!r}; the built-in model is builtin:tiny")
            path = str(tiny_model_dir())
            revision = f"builtin-r{TINY_REVISION}"
        else:
            path = os.path.expanduser(spec)
            looks_local = os.sep in spec and (spec.startswith((".", os.sep, "~")) or spec.count("/") != 1)
            if looks_local and not os.path.isdir(path):
                raise BackendLoadError(f"--energy-model={spec}: no such model directory")
            if not os.path.isdir(path):
                hub_options, snapshot = hub_source(spec)
                weights_dir = snapshot or path
        if dtype == "auto":
            # Half precision on a CPU is slow and sometimes unsupported: use
            # float32 there, the checkpoint's own dtype on a GPU.
            torch_dtype: Any = "auto" if resolved.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # progress bars would clutter the pytest output
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, **hub_options)
            if device_map:
                hub_options["device_map"] = device_map
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **hub_options)
        except Exception as exc:  # transformers raises many types; all mean "cannot load"
            raise BackendLoadError(f"--energy-model={spec}: cannot load model: {_first_line(exc)}") from None
        if device_map:
            # Inputs go where the embeddings are; the layers stay where accelerate put them.
            resolved = str(model.get_input_embeddings().weight.device)
        else:
            model.to(resolved)
        model.eval()
        if not revision:
            revision = getattr(model.config, "_commit_hash", None) or ""
        return cls(model, tokenizer, model_id=spec, device=resolved, revision=revision,
                   weights=weights_fingerprint(weights_dir or path))

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def start(self) -> HFDecoding:
        return HFDecoding(self)

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._eos

    def synchronize(self) -> None:
        # Every GPU the model spans: the last layers' work may still be queued on another one.
        for device in self.spans:
            if device.startswith("cuda"):
                self.torch.cuda.synchronize(self.torch.device(device))

    def describe(self) -> dict[str, Any]:
        dtype: Optional[Any] = getattr(self.model, "dtype", None)
        return {
            "id": self.model_id,
            "revision": self.revision,
            "weights": self.weights,
            "device": self.device,
            "dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "architecture": type(self.model).__name__,
            "spans": list(self.spans),
        }
