"""How the CPU sampler uses its counter-based Exp(1) draws (model/random_draws.py): seeded streams, unseeded
noise under torch.manual_seed (the kernel itself: tests/core/test_exponential_draws.py)."""

from __future__ import annotations

import torch

from kvserve.model.random_draws import PhiloxStream, fill_exponentials, seeded_stream
from kvserve.model.sampler import Sampler
from tests.model.test_sampler import make_metadata


def test_a_seeded_stream_advances_one_vector_per_draw() -> None:
    a, b = PhiloxStream(-5), PhiloxStream(-5)  # any Python int: negative seeds wrap around 2^64
    first, second = a.exponentials(100), a.exponentials(100)
    assert a.draws == 2 and not torch.equal(first, second)
    assert torch.equal(b.exponentials(100), first) and torch.equal(b.exponentials(100), second)
    assert isinstance(seeded_stream(3, torch.device("cpu")), PhiloxStream)


def test_sampler_draws_once_per_step_from_a_seeded_stream() -> None:
    stream = PhiloxStream(5)
    metadata = make_metadata([1.0, 0.0, 1.0], generators={2: stream})
    Sampler()(torch.randn(3, 37), metadata)
    assert stream.draws == 1


def test_seeded_rows_sample_the_same_tokens_whatever_the_batch() -> None:
    """A seeded row's tokens depend on its seed and step only: alone, or among other random rows."""
    torch.manual_seed(0)
    logits = torch.randn(6, 500)
    alone_stream, batch_stream = PhiloxStream(77), PhiloxStream(77)
    alone, in_batch = [], []
    for step in range(12):
        row = logits[step % 6 : step % 6 + 1] * 0.5
        alone.append(int(Sampler()(row.clone(), make_metadata([1.0], generators={0: alone_stream})).sampled_token_ids))
        batch = torch.cat([torch.randn(2, 500), row, torch.randn(1, 500)])
        out = Sampler()(batch, make_metadata([1.0, 0.7, 1.0, 1.3], top_k=[0, 5, 0, 0], generators={2: batch_stream}))
        in_batch.append(int(out.sampled_token_ids[2]))
    assert alone == in_batch
    assert len(set(alone)) > 3  # really random from step to step


def test_unseeded_draws_follow_torch_manual_seed() -> None:
    def noise() -> torch.Tensor:
        out = torch.empty(4, 300)
        fill_exponentials(out)
        return out

    torch.manual_seed(11)
    first = noise()
    torch.manual_seed(11)
    assert torch.equal(noise(), first)
    assert not torch.equal(first[0], first[1])  # each row its own counter
    assert not torch.equal(noise(), first)


def test_the_one_pass_race_picks_the_token_of_the_race_over_probabilities() -> None:
    """Rows that only scale by temperature take the one-pass kernel: the same token as argmax p / E over the
    softmax and the stream's draws (the path of truncated rows), and the stream advances by one draw."""
    torch.manual_seed(5)
    logits = torch.randn(8, 1000) * 2
    temperatures = [0.5, 0.8, 1.0, 1.3, 2.0, 0.7, 1.1, 0.9]
    streams = {row: PhiloxStream(1000 + row) for row in range(8)}
    out = Sampler()(logits.clone(), make_metadata(temperatures, generators=streams)).sampled_token_ids
    for row, temperature in enumerate(temperatures):
        probs = (logits[row] / temperature).softmax(dim=-1)
        expected = int((probs / PhiloxStream(1000 + row).exponentials(1000)).argmax())
        assert int(out[row]) == expected
        assert streams[row].draws == 1
