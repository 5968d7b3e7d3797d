"""The blog's figures: learning curves, reconstructions, latent map, prior samples; the
manifold, interpolations and the CVAE's digits.

Every `save_*` function takes NumPy arrays and a path and writes one PNG (Agg
backend, no display needed), whole or not at all (`files.atomic_write`).
`latent_scatter` and `save_figure` are the pieces the experiments' figures share.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from vae_jax.app.files import atomic_write  # noqa: E402


def image_grid(images: np.ndarray, nrow: int, pad: int = 2) -> np.ndarray:
  """[N, 784] or [N, 28, 28] in [0, 1] -> one [H, W] image, `nrow` images per row.

  Like torchvision's `save_image(..., nrow=nrow, padding=2)`, in grey.
  """
  images = np.asarray(images, np.float32).reshape(-1, 28, 28)
  rows = -(-len(images) // nrow)
  grid = np.zeros((rows * (28 + pad) + pad, nrow * (28 + pad) + pad), np.float32)
  for i, img in enumerate(images):
    r, c = divmod(i, nrow)
    grid[pad + r * (28 + pad):pad + r * (28 + pad) + 28,
         pad + c * (28 + pad):pad + c * (28 + pad) + 28] = img
  return grid


def save_figure(fig, path, dpi: int = 100) -> None:
  """Lays out, writes and closes a Matplotlib figure."""
  fig.tight_layout()
  atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
  plt.close(fig)


def latent_scatter(ax, xy: np.ndarray, labels: np.ndarray, *, title: str = "", lim: float = 6.0,
                   size: float = 3.0) -> None:
  """2-D latent points [N, 2] coloured by digit (jet, one colour a digit), with a colour bar.

  The blog's latent map; axes span [-lim, lim] (the blog's 6) on both sides.
  """
  sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="jet", marker=".", s=size,
                  vmin=-0.5, vmax=9.5)
  ax.figure.colorbar(sc, ax=ax, ticks=range(10), label="digit")
  ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=title)
  ax.grid(True)


def save_grid(images: np.ndarray, path, nrow: int = 8) -> None:
  grid = image_grid(images, nrow)
  atomic_write(path, lambda f: plt.imsave(f, grid, cmap="gray", vmin=0.0, vmax=1.0,
                                          format="png"))


def save_reconstructions(originals: np.ndarray, recons: np.ndarray, path) -> None:
  """8 test images (top row) over their reconstructions (bottom row), as the blog."""
  save_grid(np.concatenate([originals, recons]), path, nrow=len(originals))


def save_learning_curves(history: list[dict], path, title: str = "") -> None:
  """Train and test loss per image against epoch; right panel: the recon / KL split. A
  short run's epochs are marked (one epoch would otherwise draw nothing)."""
  epochs = [h["epoch"] for h in history]
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  mark = "o" if len(history) <= 20 else None
  ax.plot(epochs, [h["train_loss"] for h in history], marker=mark, label="train (sampled z)")
  ax.plot(epochs, [h["test_loss"] for h in history], marker=mark, label="test (z = mu)")
  ax.set(xlabel="epoch", ylabel="loss per image (nats)", title=title or "negative ELBO")
  ax.grid(True)
  ax.legend()
  ax2.plot(epochs, [h["test_recon"] for h in history], marker=mark, label="test reconstruction")
  ax2.plot(epochs, [h["test_kl"] for h in history], marker=mark, label="test KL")
  ax2.set(xlabel="epoch", ylabel="nats per image", yscale="log", title="test loss, split")
  ax2.grid(True, which="both")
  ax2.legend()
  for a in (ax, ax2):
    a.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not 1.2 and 1.4
  save_figure(fig, path)


def project_2d(mu: np.ndarray) -> tuple[np.ndarray, str]:
  """mu [N, z] -> ([N, 2], axis label). z = 2: itself; z > 2: the first two principal components."""
  mu = np.asarray(mu, np.float64)
  if mu.shape[1] == 1:
    return np.stack([mu[:, 0], np.zeros(len(mu))], 1), "mu (z = 1, second axis zero)"
  if mu.shape[1] == 2:
    return mu, "mu"
  from vae_jax.extensions.latent import principal_axes
  return (mu - mu.mean(0)) @ principal_axes(mu).T, f"PCA projection of mu (z = {mu.shape[1]})"


def map_limit(xy: np.ndarray) -> float:
  """The latent map's half-width: the blog's 6, or more to show every point (whole units)."""
  return max(6.0, float(np.ceil(np.abs(xy).max()))) if len(xy) else 6.0


def save_latent_map(mu: np.ndarray, labels: np.ndarray, path) -> None:
  """Scatter of the test set's mu coloured by digit, with a colour bar (the blog's axes [-6, 6])."""
  xy, what = project_2d(mu)
  lim = map_limit(xy)
  fig, ax = plt.subplots(figsize=(8, 7))
  latent_scatter(ax, xy, labels, lim=lim, size=4,
                 title=f"latent map: {what} of {len(xy)} test images")
  ax.set(xlabel=f"{what}, axis 1", ylabel=f"{what}, axis 2")
  save_figure(fig, path)


def save_manifold(images: np.ndarray, values: np.ndarray, label: str, path) -> None:
  """The decoded manifold: images [n * n, 784] (row-major, top row first) on axes labelled with
  the grid's coordinates `values` [n] (`latent.manifold_latents`)."""
  n = len(values)
  # Each digit is a cell centred on its coordinate; cells are drawn evenly, so the axis is
  # linear in the cell index and its tick labels give the (unevenly spaced) z.
  fig, ax = plt.subplots(figsize=(9, 9))
  ax.imshow(image_grid(images, n, pad=0), cmap="gray", vmin=0.0, vmax=1.0,
            extent=(-0.5, n - 0.5, n - 0.5, -0.5))
  ticks = range(0, n, max(1, n // 10))
  ax.set_xticks(list(ticks), [f"{values[i]:.2f}" for i in ticks], rotation=90)
  ax.set_yticks(list(ticks), [f"{values[::-1][i]:.2f}" for i in ticks])
  ax.set(xlabel=f"{label}, axis 1", ylabel=f"{label}, axis 2",
         title=f"decoded manifold: z = Phi^-1 of an even {n} x {n} grid on (0, 1)^2")
  save_figure(fig, path)


def save_interpolation(first: np.ndarray, path_images: np.ndarray, last: np.ndarray,
                       labels: list[str], path) -> None:
  """One row per pair: the first test image, the decoded points from its mu to the other's
  (path_images [P, steps, 784]), the last test image; `labels` name each row."""
  pairs, steps = path_images.shape[:2]
  rows = np.concatenate([first[:, None], path_images, last[:, None]], axis=1)  # [P, steps + 2, 784]
  fig, ax = plt.subplots(figsize=(1.0 * (steps + 2), 1.0 * pairs + 0.8))
  ax.imshow(image_grid(rows.reshape(-1, 784), steps + 2), cmap="gray", vmin=0.0, vmax=1.0)
  ax.set_yticks([2 + 30 * i + 14 for i in range(pairs)], labels)
  ax.set_xticks([2 + 30 * j + 14 for j in (0, 1, steps, steps + 1)],
                ["image", "t = 0", "t = 1", "image"])
  ax.set_title("decoded z = (1 - t) mu_a + t mu_b, t = 0 ... 1, between two test images")
  save_figure(fig, path)


def save_digits(images: np.ndarray, path) -> None:
  """The CVAE's digits: images [10 * S, 784], row y the decoder's output for label y at the S
  z shared by every row (column s: one z, so one style in ten digits)."""
  columns = len(images) // 10
  fig, ax = plt.subplots(figsize=(0.6 * columns + 1.0, 7.0))
  ax.imshow(image_grid(images, columns), cmap="gray", vmin=0.0, vmax=1.0)
  ax.set_yticks([2 + 30 * y + 14 for y in range(10)], [str(y) for y in range(10)])
  ax.set_xticks([2 + 30 * s + 14 for s in range(columns)], [str(s + 1) for s in range(columns)])
  ax.set(ylabel="label y", xlabel="z ~ N(0, I), the same in every row",
         title="CVAE: sigmoid(decoder(z, y))")
  save_figure(fig, path)


def save_kl_per_dim(history: list[dict], path) -> None:
  """Left: the last epoch's test KL of each latent dimension, largest first; right: the active
  units (Var_x(mu_u) > 0.01) over the epochs that counted them."""
  kl = np.sort(np.asarray(history[-1]["test_kl_per_dim"]))[::-1]
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  ax.bar(np.arange(len(kl)), kl)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set(xlabel="latent dimension, by KL", ylabel="KL per test image (nats)",
         title=f"KL of each dimension, epoch {history[-1]['epoch']} (sum {kl.sum():.2f})")
  ax.grid(True, axis="y")
  counted = [h for h in history if "active_units" in h]  # a sweep's member: the last epoch only
  ax2.plot([h["epoch"] for h in counted], [h["active_units"] for h in counted], marker=".")
  ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax2.set(xlabel="epoch", ylabel="active units", ylim=(0, len(kl) + 0.5),
          title="active units: Var_x(mu_u) > 0.01 over the test set")
  ax2.grid(True)
  save_figure(fig, path)
