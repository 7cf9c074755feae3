import torch

from deqbench.state import StateSpec, pack, unpack


def test_pack_unpack_round_trip_multiscale():
    state = (torch.randn(3, 4, 8, 8), torch.randn(3, 8, 4, 4), torch.randn(3, 16, 2, 2))
    flat = pack(state)
    spec = StateSpec.of(state)
    assert flat.shape == (3, 4 * 64 + 8 * 16 + 16 * 4) == (3, spec.dim)
    back = unpack(flat, spec)
    assert all(torch.equal(a, b) for a, b in zip(state, back, strict=True))
    # Row i of the flat view holds sample i only: solvers' per-sample norms rely on this.
    assert torch.equal(flat[1, : 4 * 64], state[0][1].reshape(-1))


def test_unpack_returns_views_of_the_flat_tensor():
    flat = torch.zeros(2, 10)
    a, b = unpack(flat, StateSpec(((2, 3), (4,))))
    a.fill_(1.0)
    assert flat[:, :6].eq(1).all() and flat[:, 6:].eq(0).all()
    assert b.shape == (2, 4)


def test_single_tensor_pack_is_a_view():
    z = torch.randn(5, 2, 3)
    assert pack((z,)).data_ptr() == z.data_ptr()
