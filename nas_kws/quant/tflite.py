"""Full-integer TFLite export (int8 in, int8 out, int8 per-channel weights, int32 biases) of the
all-integer reference (nas_kws.quant.integer), through litert-torch, checked with the
ai-edge-litert interpreter. Both come with the `tflite` extra (`pip install -e .[tflite]`).

The .tflite maps one clip's features (1, 1, bins, frames), quantized with the input tensor's
scale and zero point, to int8 logits; the FeatureConfig and classes travel in export.json. What
TFLite Micro needs beside the file is a tensor arena: `tflite_summary` walks the graph in
execution order and reports the int8 tensors alive at once (the planner's lower bound).

On a microcontroller the .tflite file itself goes into flash, so the export strips its strings
(`strip_names`: tensor and subgraph names, the description and the signature defs, which only
name-based runners need): half of a small net's file is tensor names, and the outputs stay
bit-identical. `tflite_summary` splits the file into constant buffers, names and the rest
(flatbuffer tables, per-tensor quantization parameters).
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from nas_kws.errors import NasKwsError
from nas_kws.fileio import atomic_write
from nas_kws.quant.fold import example_input

EXTRA = ("the tflite extra is not installed: pip install -e '.[tflite]' (litert-torch, "
         "ai-edge-litert)")
ALIAS_OPS = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}   # TFLite Micro runs these in place


def _interpreter(path: str | Path, threads: int = 1, delegates: bool = True):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise NasKwsError(EXTRA) from None
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: TFLite model not found")
    resolver = (OpResolverType.AUTO if delegates
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter = Interpreter(model_path=str(path), num_threads=threads,
                              experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    return interpreter


def _flatbuffers() -> ModuleType:
    try:
        from ai_edge_litert.tools import flatbuffer_utils
    except ImportError:
        raise NasKwsError(EXTRA) from None
    return flatbuffer_utils


def strip_names(path: str | Path) -> Path:
    """Rewrite a .tflite in place without its nonessential strings (LiteRT's own
    `flatbuffer_utils.strip_strings`); ops, tensors, buffers and metadata are unchanged."""
    fb = _flatbuffers()
    model = fb.read_model(str(path))
    fb.strip_strings(model)
    fb.write_model(model, str(path))   # packs the whole model before it opens the file
    return Path(path)


def export_tflite(net: nn.Module, path: str | Path, keep_names: bool = False) -> Path:
    """Convert the integer reference, stripped of its strings unless `keep_names` (debugging);
    a graph that keeps any float op is refused by name."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    try:
        import litert_torch
        from litert_torch.quantize import pt2e_quantizer
        from litert_torch.quantize.quant_config import QuantConfig
    except ImportError:
        raise NasKwsError(EXTRA) from None
    example = example_input(net, batch=1)
    # tells the converter the graph holds static int8 quantize/dequantize pairs to lower into
    # integer kernels (the pairs themselves come from nas_kws.quant.integer)
    static_int8 = QuantConfig(pt2e_quantizer=pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)))

    def write(tmp: Path) -> None:
        try:
            litert_torch.convert(net, (example,), quant_config=static_int8).export(str(tmp))
        except Exception as err:  # the converter raises many kinds; name the first line
            raise NasKwsError(f"{path}: the TFLite converter cannot lower this net: "
                              f"{_first_line(err)}") from err
        if not keep_names:
            strip_names(tmp)
        try:
            float_ops = tflite_summary(tmp)["float_ops"]
        except ValueError as err:  # the interpreter has no kernel for an op
            raise NasKwsError(f"{path}: LiteRT cannot run the converted net: "
                              f"{_first_line(err)}") from err
        if float_ops:
            raise NasKwsError(f"{path}: the converted model is not full-integer; float ops "
                              f"left: {float_ops}")

    return atomic_write(path, write)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def tflite_summary(path: str | Path) -> dict[str, Any]:
    """Op counts, the float ops left, input/output types, the int8 tensors alive at once and
    what the file's bytes are."""
    interpreter = _interpreter(path, delegates=False)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # execution order
    float_ops: Counter = Counter()
    for op in ops:
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            float_ops[op["op_name"]] += 1
        elif any(tensors[i]["dtype"] == np.float32 for i in op["outputs"]):
            float_ops[op["op_name"]] += 1
    io = {"input": interpreter.get_input_details()[0],
          "output": interpreter.get_output_details()[0]}
    return {"ops": dict(sorted(Counter(op["op_name"] for op in ops).items())),
            "float_ops": dict(float_ops),
            **{f"{k}_dtype": np.dtype(v["dtype"]).name for k, v in io.items()},
            "peak_sram_bytes": _peak_sram(ops, tensors, io["input"]["index"]),
            **file_composition(path)}


def file_composition(path: str | Path) -> dict[str, Any]:
    """The file's bytes: constant buffers (weights, biases; the scales sit in the tensor
    tables), tensor names, and the rest (flatbuffer tables, quantization parameters)."""
    model = _flatbuffers().read_model(str(path))
    size = Path(path).stat().st_size
    constants = sum(len(b.data) for b in model.buffers if b.data is not None)
    names = [len(t.name or b"") for g in model.subgraphs for t in g.tensors]
    return {"file_bytes": size, "file_kb": size / 1024, "constant_bytes": constants,
            "name_bytes": sum(names), "other_bytes": size - constants - sum(names),
            "longest_name": max(names, default=0)}


def _peak_sram(ops: list[dict], tensors: dict[int, dict], graph_input: int) -> int:
    """Largest sum of activation bytes alive at one op: a tensor lives from the op writing it
    (the graph input from the start) to the last op reading it; weights are not activations."""
    written = {i for op in ops for i in op["outputs"]}
    buffer = {graph_input: graph_input}
    born = {graph_input: 0}
    dies = {graph_input: 0}
    for n, op in enumerate(ops):
        reads = [i for i in op["inputs"] if i in buffer]
        for i in reads:
            dies[buffer[i]] = n
        for i in op["outputs"]:
            alias = op["op_name"] in ALIAS_OPS and reads and dies[buffer[reads[0]]] == n
            buffer[i] = buffer[reads[0]] if alias else i
            born.setdefault(buffer[i], n)
            dies[buffer[i]] = n
    for op in ops[-1:]:
        for i in op["outputs"]:
            dies[buffer[i]] = len(ops)
    size = {b: int(np.prod(tensors[b]["shape"])) * np.dtype(tensors[b]["dtype"]).itemsize
            for b in born if b in written or b == graph_input}
    return max((sum(s for b, s in size.items() if born[b] <= n <= dies[b])
                for n in range(len(ops))), default=0)


def tflite_logits(path: str | Path, features: np.ndarray | torch.Tensor,
                  threads: int = 1) -> np.ndarray:
    """Float logits of (N, 1, bins, frames) features through the int8 model, one clip a run:
    the input quantized with the model's own scale and zero point, the output dequantized."""
    interpreter = _interpreter(path, threads)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    (in_scale, in_zero), (out_scale, out_zero) = inp["quantization"], out["quantization"]
    info = np.iinfo(inp["dtype"])
    logits = []
    for clip in np.asarray(features, dtype=np.float32):
        q = np.clip(np.round(clip[None] / in_scale) + in_zero, info.min, info.max)
        interpreter.set_tensor(inp["index"], q.astype(inp["dtype"]))
        interpreter.invoke()
        logits.append((interpreter.get_tensor(out["index"]).astype(np.float32) - out_zero)
                      * out_scale)
    return np.concatenate(logits)

