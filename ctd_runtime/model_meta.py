"""The `ctd.*` metadata every exported ONNX file carries, read without the onnx package.

The station reads everything it needs from here (DESIGN.md, "Model metadata"):

    ctd.version        ctd version that exported the file (major must match this ctd's)
    ctd.schema         landmark schema, JSON (LandmarkSchema.to_dict)
    ctd.input_size     crop side in pixels (the network input is input_size x input_size)
    ctd.normalization  channel order, mean and scale, JSON (Normalization.to_dict)
    ctd.decode         argmax | quarter | dark (what the fused graph decodes with)
    ctd.precision      fp32 | fp16 | int8
    ctd.graph          fused (uint8 image + crop affine -> landmarks, scores) | raw (heatmaps)
    ctd.codec          {"stride": 4, "sigma": 1.5}, JSON
    ctd.run_id         the training run the weights come from
    ctd.outputs        output names in order, JSON list, e.g. ["landmarks", "scores"]

Optional (absent in files exported before it existed):

    ctd.crop           the training crop rule, JSON {"rule": "face"|"schema"|"pfl", "margin": m,
                       "crop_scale": s} (ctd_runtime.crop_rule.CropSpec); absent -> DEFAULT_CROP
                       (face, 0.25, 2.5), what those runs were trained with

`ModelMetadata.to_map` / `from_map` convert to and from these string pairs; the writer is the
export package's `metadata` module (it needs onnx), the TensorRT manifest reuses the same map.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctd_runtime import __version__
from ctd_runtime.artifacts import ONNX_PRECISIONS
from ctd_runtime.codec import DECODE_METHODS, HeatmapCodec
from ctd_runtime.crop_rule import DEFAULT_CROP, CropSpec
from ctd_runtime.errors import CtdError
from ctd_runtime.normalization import Normalization
from ctd_runtime.schema import LandmarkSchema

PREFIX = "ctd."
KEYS: tuple[str, ...] = (
    "ctd.version",
    "ctd.schema",
    "ctd.input_size",
    "ctd.normalization",
    "ctd.decode",
    "ctd.precision",
    "ctd.graph",
    "ctd.codec",
    "ctd.run_id",
    "ctd.outputs",
)
OPTIONAL_KEYS: tuple[str, ...] = ("ctd.crop",)
GRAPHS: tuple[str, ...] = ("fused", "raw")


def version_major(version: str) -> int:
    """The major number of a version string such as 0.1.0 (ValueError when there is none)."""
    return int(str(version).strip().split(".")[0])


@dataclass(frozen=True)
class ModelMetadata:
    """What an exported model says about itself."""

    ctd_version: str
    schema: LandmarkSchema
    input_size: int
    normalization: Normalization
    decode: str
    precision: str
    graph: str
    stride: int
    sigma: float
    run_id: str
    outputs: tuple[str, ...]
    crop: CropSpec | None = None  # None: the file has no ctd.crop (see crop_spec)

    @property
    def crop_spec(self) -> CropSpec:
        """The training crop rule: ctd.crop, or DEFAULT_CROP for files without it."""
        return self.crop if self.crop is not None else DEFAULT_CROP

    @property
    def codec(self) -> HeatmapCodec:
        return HeatmapCodec(input_size=self.input_size, stride=self.stride, sigma=self.sigma)

    @property
    def num_landmarks(self) -> int:
        return self.schema.num_landmarks

    def to_map(self) -> dict[str, str]:
        """The `ctd.*` key/value strings, in KEYS order (then ctd.crop when set)."""
        out = {
            "ctd.version": self.ctd_version,
            "ctd.schema": self.schema.to_json(),
            "ctd.input_size": str(int(self.input_size)),
            "ctd.normalization": json.dumps(self.normalization.to_dict()),
            "ctd.decode": self.decode,
            "ctd.precision": self.precision,
            "ctd.graph": self.graph,
            "ctd.codec": json.dumps({"stride": int(self.stride), "sigma": float(self.sigma)}),
            "ctd.run_id": self.run_id,
            "ctd.outputs": json.dumps(list(self.outputs)),
        }
        if self.crop is not None:
            out["ctd.crop"] = self.crop.to_json()
        return out

    @classmethod
    def from_map(cls, meta: dict[str, str], where: str | Path | None = None) -> "ModelMetadata":
        """Parse and check the `ctd.*` strings; CtdError naming `where` and the bad or missing key."""
        if not any(k.startswith(PREFIX) for k in meta):
            raise CtdError(
                "no ctd metadata (key ctd.version missing): not a model written by `ctd export`; "
                "export it with `ctd export RUN --out DIR`",
                path=where,
            )
        for key in KEYS:
            if key not in meta:
                raise CtdError(f"ctd metadata incomplete: key {key} missing; re-export the model", path=where)

        version = meta["ctd.version"]
        try:
            theirs, ours = version_major(version), version_major(__version__)
        except ValueError:
            raise CtdError(f"ctd.version {version!r} is not a version number", path=where) from None
        if theirs > ours:
            raise CtdError(
                f"exported by ctd {version}, a newer major version than this ctd {__version__}: "
                "upgrade ctd on this machine",
                path=where,
            )
        if theirs < ours:
            raise CtdError(
                f"exported by ctd {version}, an older major version than this ctd {__version__}: "
                "re-export the model with this ctd",
                path=where,
            )

        def load_json(key: str) -> Any:
            try:
                return json.loads(meta[key])
            except json.JSONDecodeError as e:
                raise CtdError(f"{key} is not valid JSON ({e})", path=where) from None

        schema = LandmarkSchema.from_json(meta["ctd.schema"], where=where)
        try:
            input_size = int(meta["ctd.input_size"])
        except ValueError:
            raise CtdError(f"ctd.input_size {meta['ctd.input_size']!r} is not an integer", path=where) from None
        try:
            normalization = Normalization.from_dict(load_json("ctd.normalization"))
        except (KeyError, TypeError, ValueError) as e:
            raise CtdError(f"ctd.normalization is not a valid normalisation ({e})", path=where) from None
        codec = load_json("ctd.codec")
        try:
            stride, sigma = int(codec["stride"]), float(codec["sigma"])
            HeatmapCodec(input_size=input_size, stride=stride, sigma=sigma)
        except (KeyError, TypeError, ValueError) as e:
            raise CtdError(f"ctd.codec is not a valid codec for input size {input_size} ({e})", path=where) from None
        outputs = load_json("ctd.outputs")
        if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
            raise CtdError(f"ctd.outputs must be a JSON list of names, not {meta['ctd.outputs']!r}", path=where)
        checks = (("ctd.decode", DECODE_METHODS), ("ctd.precision", ONNX_PRECISIONS), ("ctd.graph", GRAPHS))
        for key, allowed in checks:
            if meta[key] not in allowed:
                raise CtdError(f"{key} {meta[key]!r} is not one of {', '.join(allowed)}", path=where)
        return cls(
            ctd_version=version,
            schema=schema,
            input_size=input_size,
            normalization=normalization,
            decode=meta["ctd.decode"],
            precision=meta["ctd.precision"],
            graph=meta["ctd.graph"],
            stride=stride,
            sigma=sigma,
            run_id=meta["ctd.run_id"],
            outputs=tuple(outputs),
            crop=CropSpec.from_json(meta["ctd.crop"], where=where) if "ctd.crop" in meta else None,
        )


def session_metadata_map(session: Any) -> dict[str, str]:
    """The custom metadata of an onnxruntime.InferenceSession, as a plain dict."""
    return dict(session.get_modelmeta().custom_metadata_map)


def read_model_metadata(path: str | Path) -> ModelMetadata:
    """The ctd metadata of an ONNX file (read through ONNX Runtime, no onnx package).

    CtdError naming the file when it is missing, not ONNX, has no ctd metadata, misses a key, or
    comes from another major ctd version.
    """
    from ctd_runtime.backends.ort_session import open_session  # here: ctd_runtime.backends imports this module

    path = Path(path)
    session = open_session(path, optimization="disable")  # metadata only: no graph rewriting
    return ModelMetadata.from_map(session_metadata_map(session), where=path)
