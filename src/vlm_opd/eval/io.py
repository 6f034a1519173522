"""Reading benchmark releases from disk or the hub, decoding images, and writing files atomically."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from vlm_opd.errors import DataError
from vlm_opd.io_utils import atomic_write_json, atomic_write_text  # noqa: F401  (re-exported)

DATA_SUFFIXES = (".parquet", ".jsonl", ".json")
# Files that sit next to data files in HF snapshots / exports but hold no rows.
_NOT_DATA = {"dataset_info.json", "state.json", "dataset_dict.json", "results.json", "config.json"}


def _rows_from_json(path: Path, title: str) -> list[dict]:
    try:
        if path.suffix == ".jsonl":
            rows = []
            with path.open(encoding="utf-8") as f:
                for line_no, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise DataError(f"{title}: {path} line {line_no} is not valid JSON ({err.msg})") from None
            return rows
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{title}: cannot read {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{title}: {path} is not valid JSON (line {err.lineno}: {err.msg})") from None
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        # Official releases such as MathVista's testmini.json and LogicVista's dataset.json are
        # objects keyed by problem id; keep the key so rows stay identifiable.
        return [{"_key": key, **row} for key, row in data.items()]
    raise DataError(f"{title}: {path} must hold a JSON list of rows or an object of rows keyed by id")


def _rows_from_parquet(path: Path, title: str) -> list[dict]:
    try:
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    except Exception as err:
        raise DataError(f"{title}: cannot read parquet file {path}: {err}") from None


def _pick_files(directory: Path, split: str | None, title: str) -> list[Path]:
    files = sorted(
        p for p in directory.rglob("*")
        if p.is_file() and p.suffix in DATA_SUFFIXES and p.name not in _NOT_DATA
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    if not files:
        raise DataError(f"{title}: no .parquet/.jsonl/.json data file found under {directory}")
    if len(files) == 1:
        return files
    if split:
        # HF shards are named "<split>-00000-of-00001.parquet"; official JSON is "<split>.json".
        chosen = [p for p in files if p.stem == split or p.stem.startswith(f"{split}-")]
        if chosen:
            kinds = {p.suffix for p in chosen}
            if len(kinds) == 1:
                return chosen
    listing = ", ".join(str(p.relative_to(directory)) for p in files[:10])
    raise DataError(
        f"{title}: found several data files under {directory} ({listing}) and cannot tell which holds "
        f"split {split!r}; pass the file itself as the source"
    )


def read_rows(source: str | Path, title: str, split: str | None = None) -> tuple[list[dict], Path]:
    """Rows of a local release (file or directory) and the directory image paths are relative to.

    Accepts a .parquet/.jsonl/.json file, a directory holding one (or the shards of `split`), or a
    directory written by `datasets.Dataset.save_to_disk`.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{title}: source {path} does not exist")
    if path.is_dir():
        if (path / "state.json").exists() and (path / "dataset_info.json").exists():
            try:
                from datasets import load_from_disk

                return [dict(r) for r in load_from_disk(str(path))], path
            except Exception as err:
                raise DataError(f"{title}: cannot load the saved dataset at {path}: {err}") from None
        files = _pick_files(path, split, title)
        base = path
    else:
        if path.suffix not in DATA_SUFFIXES:
            raise DataError(f"{title}: {path} is not a .parquet, .jsonl or .json file")
        files = [path]
        base = path.parent
    rows: list[dict] = []
    for f in files:
        rows.extend(_rows_from_parquet(f, title) if f.suffix == ".parquet" else _rows_from_json(f, title))
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{title}: row {i} of {files[0]} is a {type(row).__name__}, expected an object")
    return rows, base


def read_hub(path: str, config: str | None, split: str, title: str, name: str) -> list[dict]:
    """Rows of a hub dataset via `datasets.load_dataset`; failures become one DataError."""
    try:
        from datasets import load_dataset

        ds = load_dataset(path, config, split=split) if config else load_dataset(path, split=split)
        return [dict(r) for r in ds]
    except Exception as err:
        where = f"{path!r}" + (f" (config {config!r})" if config else "") + f", split {split!r}"
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(
            f"{title}: could not load {where} from the Hugging Face hub ({first_line}). "
            f"Download it where you have network access and pass the local copy as '{name}:/path/to/it'"
        ) from None


def load_image(value: Any, base_dir: Path | None, where: str, search_dirs: tuple[str, ...] = ()) -> Image.Image:
    """Decode an image field into an RGB PIL image.

    `value` may be a PIL image, raw bytes, a `{"bytes": ..., "path": ...}` struct (parquet exports of
    HF Image columns) or a path relative to `base_dir` (also tried under each of `search_dirs`).
    `where` names the benchmark, row and field for error messages.
    """
    try:
        if isinstance(value, Image.Image):
            return value.convert("RGB")
        if isinstance(value, (bytes, bytearray)):
            with Image.open(io.BytesIO(value)) as im:
                return im.convert("RGB")
        if isinstance(value, dict):
            if value.get("bytes"):
                with Image.open(io.BytesIO(value["bytes"])) as im:
                    return im.convert("RGB")
            if value.get("path"):
                value = value["path"]
            else:
                raise DataError(f"{where}: image struct has neither bytes nor path")
        if isinstance(value, (str, Path)) and str(value).strip():
            rel = Path(str(value).strip())
            candidates = [rel] if rel.is_absolute() else []
            if not rel.is_absolute() and base_dir is not None:
                candidates += [base_dir / rel] + [base_dir / d / rel for d in search_dirs] + [base_dir.parent / rel]
            for cand in candidates:
                if cand.is_file():
                    with Image.open(cand) as im:
                        return im.convert("RGB")
            tried = ", ".join(str(c) for c in candidates) or str(rel)
            raise DataError(f"{where}: image file {str(value)!r} not found (tried {tried})")
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{where}: cannot decode image: {err}") from None
    raise DataError(f"{where}: expected an image (PIL image, bytes, path or bytes/path struct), got {type(value).__name__}")
