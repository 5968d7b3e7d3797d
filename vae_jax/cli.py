"""Command line: `vae-jax train | bench | data` (also `python -m vae_jax ...`).

  vae-jax train --workdir runs/vae_2                   # the blog's run: z = 2, 100 epochs
  vae-jax train --workdir runs/vae_20 --latent-dim 20
  vae-jax bench --epochs 3                             # seconds per epoch, JAX vs PyTorch
  vae-jax data                                         # fetch and cache MNIST, print a check
  vae-jax evaluate --weights vae.pth                   # test loss of saved weights (blog's too)
  vae-jax export --weights runs/vae_2/params.msgpack --out vae.pth   # to the blog's layout

Every field of `Config` is a flag (`--latent-dim`, `--epochs`, ...). Bad options
and an occupied --workdir are refused in one line before anything long starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from vae_jax.config import Config

_NONE = "none"


def _parse_value(kind):
  def parse(text: str):
    if text.lower() == _NONE:
      return None
    return kind(text)
  return parse


def add_config_flags(parser: argparse.ArgumentParser) -> None:
  hints = typing.get_type_hints(Config)
  for field in dataclasses.fields(Config):
    hint = hints[field.name]
    kind = next((t for t in (int, float, str) if t == hint or t in typing.get_args(hint)), str)
    choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
    parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name,
                        type=_parse_value(kind), choices=choices, default=field.default,
                        help=f"default: {field.default}")


def config_from_args(args: argparse.Namespace) -> Config:
  return Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="vae-jax", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  t = sub.add_parser("train", help="train the VAE and write every figure into --workdir")
  t.add_argument("--workdir", required=True, help="run directory (created if missing)")
  t.add_argument("--overwrite", action="store_true", help="replace results already in --workdir")
  t.add_argument("--no-progress", action="store_true", help="no progress bar")
  add_config_flags(t)
  b = sub.add_parser("bench", help="seconds per epoch: this JAX trainer vs the blog's PyTorch loop")
  b.add_argument("--bench-epochs", type=int, default=3, help="epochs timed per loop (median)")
  b.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
  add_config_flags(b)
  d = sub.add_parser("data", help="fetch, convert and cache MNIST; print its checks")
  add_config_flags(d)
  e = sub.add_parser("evaluate", help="test loss (z = mu) of saved weights: ours or a PyTorch vae.pth")
  e.add_argument("--weights", required=True, help="params.msgpack, vae.pth/.pt or .npz state dict")
  add_config_flags(e)
  x = sub.add_parser("export", help="write weights in the blog's state_dict layout (.pth or .npz)")
  x.add_argument("--weights", required=True, help="params.msgpack (or a .pth/.npz to convert)")
  x.add_argument("--out", required=True, help="vae.pth (needs torch) or vae.npz")
  add_config_flags(x)
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    config = config_from_args(args)
  except ValueError as e:
    parser.error(str(e))

  from vae_jax.data import DataError
  try:
    if args.command in ("evaluate", "export"):
      from vae_jax import checkpoint
      params, wconfig = checkpoint.load_weights(args.weights, config)
    if args.command == "train":
      from vae_jax import train
      train.train_and_evaluate(config, args.workdir, overwrite=args.overwrite,
                               progress=not args.no_progress)
    elif args.command == "bench":
      from vae_jax import bench
      if args.bench_epochs < 1:
        parser.error(f"--bench-epochs must be >= 1, got {args.bench_epochs}")
      bench.run(config, args.bench_epochs, torch_loaders=() if args.no_torch else ("blog", "tensor"))
    elif args.command == "data":
      from vae_jax import data
      arrays = data.load_cached(config.data_source, config.data_dir)
      print(data.describe(arrays, data.cache_path(config.data_source, config.data_dir)))
    elif args.command == "evaluate":
      from vae_jax import data, train
      test = data.load_mnist("test", source=config.data_source, data_dir=config.data_dir)
      m = train.make_evaluate(train.make_model(wconfig))(params, train.flatten(test.images))
      n = len(test.labels)
      print(f"{args.weights} (z={wconfig.latent_dim}): test loss {float(m.loss) / n:.4f} "
            f"(recon {float(m.recon) / n:.4f} + KL {float(m.kl) / n:.4f}) per image, z = mu")
    elif args.command == "export":
      from pathlib import Path
      from vae_jax import torch_io
      if Path(args.out).exists():
        raise FileExistsError(f"{args.out} exists: choose another --out or delete it")
      torch_io.export_state_dict(params, args.out)
      print(f"wrote {args.out} (z={wconfig.latent_dim}, the blog's state_dict layout)")
  except (DataError, FileExistsError, FileNotFoundError, ValueError) as e:
    print(f"vae-jax: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
