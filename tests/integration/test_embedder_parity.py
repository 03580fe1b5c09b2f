"""The ONNX embedder against sentence-transformers on the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from classifier.embedder import BatchedEmbedder, OnnxEmbedder, ensure_exported, locate_model
from classifier.embedder.chunking import plan_runs
from classifier.embedder.export import _atomic_target
from classifier.embedder.tokens import PromptTokenizer
from router.core.protocols import Embedder
from router.errors import ModelError

pytestmark = pytest.mark.integration

MIN_COSINE = 0.999

_WORDS = (
    "budget", "router", "tenant", "latency", "token", "sample", "vote", "answer", "model",
    "tier", "cost", "window", "prime", "integral", "matrix", "vector", "gradient", "theorem",
    "proof", "lemma", "graph", "cache", "queue", "river", "mountain", "winter", "castle",
    "letter", "garden", "music", "painter", "harbour", "lantern",
)  # fmt: skip


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _prompts() -> list[str]:
    rng = random.Random(20240611)
    fixed = [
        # short
        "hi",
        "?",
        "Why?",
        "ok",
        "Translate 'cat'.",
        "What is the capital of Australia?",
        "Summarise this in one line.",
        # empty-ish
        "",
        " ",
        "   \n\t  \n",
        "\u00a0\u2003",
        # math
        "What is 17 * 23?",
        "Solve for x: 3x^2 - 5x + 2 = 0.",
        "Prove that √2 is irrational.",
        "∫₀^π sin(x) dx = ?",
        "Let f(x) = e^{2x}·ln(x). Compute f'(x) and evaluate at x = 1.",
        "If a train leaves at 3:45 pm at 80 km/h and another at 4:10 pm at 95 km/h, "
        "when does the second overtake the first?",
        "Σ_{k=1}^{n} k² = n(n+1)(2n+1)/6 — show by induction.",
        "123456789 + 987654321 = ?",
        # code
        "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n# make it iterative",
        "SELECT tenant, SUM(cost) FROM charges GROUP BY tenant HAVING SUM(cost) > 100;",
        '#include <stdio.h>\nint main(void) { printf("hello\\n"); return 0; }',
        "Why does `let x: Vec<&str> = s.split(',').collect();` fail to borrow?",
        "```python\nimport asyncio\nasync def main():\n    await asyncio.sleep(1)\n```",
        '{"tenant": "acme", "caps": {"daily": 5000000}, "arms": ["local-7b/greedy"]}',
        '<div class="x"><span>&amp; &lt;tag&gt;</span></div>',
        # multilingual / non-ASCII
        "Wie spät ist es in München?",
        "Où se trouve la bibliothèque la plus proche ?",
        "¿Cuál es la raíz cuadrada de ciento cuarenta y cuatro?",
        "Какая погода будет завтра в Москве?",
        "東京で一番高いビルはどれですか？",
        "请用中文解释量子纠缠。",
        "서울에서 부산까지 기차로 얼마나 걸리나요?",
        "ما هي عاصمة المغرب؟",
        "हिंदी में एक छोटी कविता लिखिए।",
        "Ελληνικά: τι είναι η φιλοσοφία;",
        "Tiếng Việt có dấu: xin chào các bạn!",
        "naïve café coöperate résumé Ångström",
        # emojis
        "🙂",
        "🔥🔥🔥 best pizza in town?? 🍕🍕",
        "Can you explain this: 👨‍👩‍👧‍👦 + 🏳️‍🌈 = ?",
        "I'm so tired 😴😴 help me plan my week 📅",
        # mixed cases and odd spacing
        "ThIs Is MiXeD cAsE tExT",
        "word\t\ttabs\n\n\nnewlines    spaces",
        "a" * 300,
        "https://example.com/path?query=1&other=two#frag",
    ]
    long_prompts = [
        # thousands of characters: all truncated to the first tokens
        _words(rng, 700),
        ". ".join(_words(rng, 12) for _ in range(120)),
        "def handler(event):\n    return process(event)\n\n" * 80,
        "量子計算機は重ね合わせと量子もつれを利用する。" * 150,
        "Explain the following log:\n"
        + "\n".join(
            f"2024-06-{d:02d}T10:{m:02d}:00Z INFO request={d * 100 + m} ok"
            for d in range(1, 29)
            for m in range(0, 60, 7)
        ),
        "emoji spam " + "🚀 🎉 " * 800,
        ("x = " + " + ".join(str(i) for i in range(900))),
        # near the limit
        _words(rng, 240),
        _words(rng, 260),
    ]
    return fixed + long_prompts


PROMPTS = _prompts()


@pytest.fixture(scope="session")
def embedder_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedder-cache")


@pytest.fixture(scope="session")
def onnx_embedder(embedder_cache: Path) -> OnnxEmbedder:
    return OnnxEmbedder.load(embedder_cache)


@pytest.fixture(scope="session")
def onnx_vectors(onnx_embedder: OnnxEmbedder) -> NDArray[np.float32]:
    return onnx_embedder.embed_batch(PROMPTS)


@pytest.fixture(scope="session")
def st_model() -> Any:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf: Any = hf_logging
    hf.disable_progress_bar()
    try:
        return SentenceTransformer(str(locate_model().root), device="cpu")
    finally:
        hf.enable_progress_bar()


@pytest.fixture(scope="session")
def reference(st_model: Any) -> NDArray[np.float32]:
    out = st_model.encode(PROMPTS, normalize_embeddings=True, batch_size=32)
    return np.asarray(out, dtype=np.float32)


def _cosines(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    num = np.sum(a * b, axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray(num / den, dtype=np.float32)


def test_prompt_set_is_varied() -> None:
    assert len(PROMPTS) >= 50
    assert sum(len(p) > 3000 for p in PROMPTS) >= 4
    assert any(not p.strip() for p in PROMPTS)
    assert any(ord(c) > 0x1F000 for p in PROMPTS for c in p)


def test_shape_dtype_and_unit_rows(
    onnx_embedder: OnnxEmbedder, onnx_vectors: NDArray[np.float32]
) -> None:
    out = onnx_vectors
    assert onnx_embedder.dim == 384
    assert out.shape == (len(PROMPTS), 384)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert onnx_embedder.embed_batch([]).shape == (0, 384)


def test_max_tokens_comes_from_the_model_folder(onnx_embedder: OnnxEmbedder, st_model: Any) -> None:
    assert onnx_embedder.max_tokens == 256
    assert onnx_embedder.max_tokens == st_model.max_seq_length


def test_token_ids_match_sentence_transformers(st_model: Any) -> None:
    tokenizer = PromptTokenizer.load(locate_model())
    for start in range(0, len(PROMPTS), 16):
        chunk = PROMPTS[start : start + 16]
        ids, mask = tokenizer.encode(chunk)
        features = st_model.preprocess(chunk)
        np.testing.assert_array_equal(ids, features["input_ids"].numpy())
        np.testing.assert_array_equal(mask, features["attention_mask"].numpy())


def test_long_prompts_are_truncated_to_max_tokens() -> None:
    tokenizer = PromptTokenizer.load(locate_model())
    long_prompts = [p for p in PROMPTS if tokenizer.count(p) > 1000]
    assert len(long_prompts) >= 5
    ids, mask = tokenizer.encode(long_prompts)
    assert ids.shape == (len(long_prompts), 256)
    assert mask.all()
    assert (ids[:, 0] == 101).all() and (ids[:, -1] == 102).all()


def test_cosine_against_sentence_transformers(
    onnx_vectors: NDArray[np.float32], reference: NDArray[np.float32]
) -> None:
    cos = _cosines(onnx_vectors, reference)
    worst = int(np.argmin(cos))
    print(
        f"\nfp32 ONNX vs sentence-transformers over {len(PROMPTS)} prompts: "
        f"min cosine {cos.min():.7f} (prompt {worst}), mean {cos.mean():.7f}"
    )
    bad = [(i, float(c), PROMPTS[i][:40]) for i, c in enumerate(cos) if c < MIN_COSINE]
    assert not bad, f"prompts below cosine {MIN_COSINE}: {bad}"


def test_batch_and_single_give_the_same_vectors(
    onnx_embedder: OnnxEmbedder, onnx_vectors: NDArray[np.float32]
) -> None:
    tokenizer = PromptTokenizer.load(locate_model())
    lengths = [len(ids) for ids in tokenizer.token_ids(PROMPTS)]
    padded_runs = [r for r in plan_runs(lengths) if len({lengths[i] for i in r}) > 1]
    assert padded_runs, "no run of this batch pads, so the test would prove nothing"
    singles = np.stack([onnx_embedder.embed_batch([p])[0] for p in PROMPTS])
    np.testing.assert_allclose(onnx_vectors, singles, atol=2e-5)


def test_padding_does_not_leak_into_the_mean(onnx_embedder: OnnxEmbedder) -> None:
    short, longer = "hi", "what is the tallest mountain in europe, and how high is it?"
    tokenizer = PromptTokenizer.load(locate_model())
    ids, mask = tokenizer.encode([short, longer])
    assert mask[0].sum() < mask[1].sum() == ids.shape[1]
    assert plan_runs([int(m.sum()) for m in mask]) == [[0, 1]]
    pair = onnx_embedder.embed_batch([short, longer])
    np.testing.assert_allclose(pair[0], onnx_embedder.embed_batch([short])[0], atol=2e-5)
    np.testing.assert_allclose(pair[1], onnx_embedder.embed_batch([longer])[0], atol=2e-5)


def test_runs_group_similar_lengths() -> None:
    assert plan_runs([]) == []
    assert plan_runs([12] * 40) == [list(range(40))]
    assert plan_runs([10, 14, 12]) == [[0, 2, 1]]
    lengths = [8] * 31 + [256]
    assert plan_runs(lengths) == [list(range(31)), [31]]
    rng = random.Random(7)
    many = [rng.randint(3, 256) for _ in range(1000)]
    runs = plan_runs(many, max_run=64)
    assert sorted(i for r in runs for i in r) == list(range(1000))
    assert all(1 <= len(r) <= 64 for r in runs)
    flat = [many[i] for r in runs for i in r]
    assert flat == sorted(many)


def test_different_prompts_give_different_vectors(onnx_embedder: OnnxEmbedder) -> None:
    a, b, c = onnx_embedder.embed_batch(
        ["How do I bake sourdough bread?", "Recipe for sourdough loaf", "Compile a C program"]
    )
    assert float(a @ b) > float(a @ c) + 0.2


def test_count_tokens_is_untruncated_wordpiece(onnx_embedder: OnnxEmbedder, st_model: Any) -> None:
    for text in [*PROMPTS[::5], PROMPTS[-3]]:
        expected = len(st_model.tokenizer(text, add_special_tokens=False)["input_ids"])
        assert onnx_embedder.count_tokens(text) == expected
    assert onnx_embedder.count_tokens(_words(random.Random(1), 2000)) >= 2000
    assert onnx_embedder.count_tokens("") == 0


def test_export_is_cached_and_reused(onnx_embedder: OnnxEmbedder, embedder_cache: Path) -> None:
    path = onnx_embedder.model_path
    assert path.parent == embedder_cache
    assert path.name.startswith("embedder-") and path.suffix == ".onnx"
    before = path.stat().st_mtime_ns
    assert ensure_exported(embedder_cache) == path
    assert path.stat().st_mtime_ns == before
    assert sorted(p.name for p in embedder_cache.iterdir() if p.name.startswith(".")) == []


def test_cache_dir_defaults_to_env(
    onnx_embedder: OnnxEmbedder, embedder_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTC_CACHE_DIR", str(embedder_cache))
    assert ensure_exported() == onnx_embedder.model_path


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "embedder-x.onnx"
    with pytest.raises(ModelError), _atomic_target(target) as tmp:
        tmp.write_bytes(b"half a graph")
        raise ModelError("export failed")
    assert list(tmp_path.iterdir()) == []
    with _atomic_target(target) as tmp:
        tmp.write_bytes(b"whole graph")
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert target.read_bytes() == b"whole graph"


def test_broken_graph_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx graph")
    with pytest.raises(ModelError):
        OnnxEmbedder.from_files(bad, locate_model())


def test_failure_at_run_time_is_a_model_error(onnx_embedder: OnnxEmbedder) -> None:
    import onnxruntime as ort

    path = onnx_embedder.model_path
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    tokenizer = PromptTokenizer.load(locate_model())
    broken = OnnxEmbedder(_OutOfVocabulary(session), tokenizer, 384, path)
    with pytest.raises(ModelError):
        broken.embed_batch(["hello"])


class _OutOfVocabulary:
    """Feeds the real session an id past the vocabulary, so ONNX Runtime itself fails."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def run(self, names: list[str], feeds: dict[str, NDArray[np.int64]]) -> Any:
        feeds = dict(feeds)
        feeds["input_ids"] = np.full_like(feeds["input_ids"], 10_000_000)
        return self._session.run(names, feeds)


def test_int8_variant_parity(embedder_cache: Path, reference: NDArray[np.float32]) -> None:
    int8 = OnnxEmbedder.load(embedder_cache, quantized=True)
    assert int8.model_path.name.endswith("-int8.onnx")
    fp32_size = ensure_exported(embedder_cache).stat().st_size
    assert int8.model_path.stat().st_size < 0.5 * fp32_size
    cos = _cosines(int8.embed_batch(PROMPTS), reference)
    print(f"\nint8 vs sentence-transformers: min cosine {cos.min():.4f}, mean {cos.mean():.4f}")
    assert cos.mean() > 0.98
    assert cos.min() > 0.95


@pytest.fixture
async def batched(onnx_embedder: OnnxEmbedder) -> AsyncIterator[BatchedEmbedder]:
    embedder = BatchedEmbedder(onnx_embedder, max_batch=16, max_wait_ms=5)
    yield embedder
    await embedder.aclose()


async def test_batched_embedder_matches_embed_batch(
    batched: BatchedEmbedder, onnx_vectors: NDArray[np.float32]
) -> None:
    assert isinstance(batched, Embedder)
    assert batched.dim == 384
    texts = PROMPTS[:40]
    async with asyncio.timeout(60):
        vectors = await asyncio.gather(*(batched.embed(t) for t in texts))
    await batched.aclose()
    expected = onnx_vectors[:40]
    for v, e in zip(vectors, expected, strict=True):
        assert v.shape == (384,) and v.dtype == np.float32
        np.testing.assert_allclose(v, e, atol=2e-5)
    assert batched.stats.items == 40
    assert batched.stats.max_batch_seen > 1
    assert batched.stats.max_batch_seen <= 16
