# The GANs' differentiable augmentation (aigc_export/images/augment.py): translation moves
# pixels exactly and brings in black, cutout blacks out a square of half the side, both let
# gradients through, and the draws depend only on the global batch, not on the rank's share.
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from aigc_export.images import augment  # noqa: E402


def _reference_translate(images, shifts, fill=-1.0):
    out = np.full_like(images, fill)
    _, _, h, w = images.shape
    for i, (dy, dx) in enumerate(shifts):
        for y in range(h):
            for x in range(w):
                if 0 <= y - dy < h and 0 <= x - dx < w:
                    out[i, :, y, x] = images[i, :, y - dy, x - dx]
    return out


def test_translation_moves_pixels_and_brings_in_black():
    images = torch.rand(4, 2, 7, 9) * 2 - 1
    shifts = torch.tensor([[0, 0], [1, -2], [-1, 1], [-1, -1]])
    moved = augment.translate(images, shifts, reach=(1, 2))
    np.testing.assert_array_equal(moved.numpy(), _reference_translate(images.numpy(), shifts.tolist()))


def test_cutout_blacks_out_a_square_of_half_the_side_clipped_at_the_border():
    images = torch.zeros(3, 1, 28, 28)
    cut = augment.cutout(images, torch.tensor([[14, 14], [0, 0], [27, 5]]))
    black = (cut == -1).sum(dim=(1, 2, 3)).tolist()
    # centred: rows 7..20; a corner: rows and columns 0..6; (27, 5): rows 20..27, columns 0..11
    assert black == [14 * 14, 7 * 7, 8 * 12]
    assert (cut[0, 0, 7:21, 7:21] == -1).all() and (cut[0, 0, 6] == 0).all()


def test_gradients_flow_through_what_is_kept():
    images = torch.rand(8, 1, 28, 28, requires_grad=True)
    torch.manual_seed(0)
    augment.augment(images, 8).sum().backward()
    grad = images.grad
    assert grad.max() == 1 and grad.min() == 0  # each kept pixel once; shifted-out and cut pixels not
    assert 0.3 < grad.mean() < 0.9


def test_draws_depend_on_the_global_batch_only(monkeypatch):
    images = torch.rand(8, 1, 28, 28) * 2 - 1
    torch.manual_seed(3)
    whole = augment.augment(images, 8)
    for rank in range(2):  # rank r of 2 holds rows r::2 and draws for all 8 rows alike
        monkeypatch.setattr(augment, "shard", lambda batch, r=rank: batch[r::2])
        torch.manual_seed(3)
        assert torch.equal(augment.augment(images[rank::2], 8), whole[rank::2])
