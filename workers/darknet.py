"""Darknet (pjreddie) cfg + weights -> a torch module. Enough of darknet for YOLOv3(-tiny).

Supported blocks: ``convolutional`` (batch-norm, leaky/linear), ``maxpool`` (stride 1 or 2, with
darknet's edge padding), ``upsample``, ``route``, ``shortcut`` and ``yolo``. The module returns
the decoded YOLO rows of every head, like darknet and ``cv2.dnn`` do: ``[B, N, 5 + classes]`` with
centre x, centre y, width, height (fractions of the network input), objectness and per-class
probabilities (sigmoid; not yet multiplied by objectness).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dupstream.core.errors import WeightsError


def parse_cfg(path: str | Path) -> list[dict[str, str]]:
    """The cfg file as a list of ``{"type": ..., key: value}`` blocks (``[net]`` first)."""
    blocks: list[dict[str, str]] = []
    for raw in Path(path).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            blocks.append({"type": line[1:-1].strip()})
        elif "=" in line and blocks:
            key, value = line.split("=", 1)
            blocks[-1][key.strip()] = value.strip()
    if not blocks or blocks[0]["type"] not in ("net", "network"):
        raise WeightsError(f"{path}: not a darknet cfg (no [net] block)")
    return blocks


class _MaxPool(nn.Module):
    """Darknet maxpool: pads right/bottom by ``size - 1`` with edge values (never zeros)."""

    def __init__(self, size: int, stride: int) -> None:
        super().__init__()
        self.size, self.stride = size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x = F.pad(x, (0, self.size - 1, 0, self.size - 1), mode="replicate")
        return F.max_pool2d(x, self.size, self.stride)


class _YoloHead(nn.Module):
    def __init__(
        self, anchors: list[tuple[float, float]], classes: int, net_w: int, net_h: int
    ) -> None:
        super().__init__()
        scale = torch.tensor([net_w, net_h], dtype=torch.float32)
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32) / scale)
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        a = self.anchors.shape[0]
        x = x.view(b, a, 5 + self.classes, h, w).permute(0, 1, 3, 4, 2).float()
        gy, gx = torch.meshgrid(
            torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij"
        )
        cx = (torch.sigmoid(x[..., 0]) + gx) / w
        cy = (torch.sigmoid(x[..., 1]) + gy) / h
        bw = torch.exp(x[..., 2]) * self.anchors[:, 0].view(1, a, 1, 1)
        bh = torch.exp(x[..., 3]) * self.anchors[:, 1].view(1, a, 1, 1)
        rest = torch.sigmoid(x[..., 4:])
        out = torch.cat([cx[..., None], cy[..., None], bw[..., None], bh[..., None], rest], -1)
        # darknet / cv2.dnn order: row-major over cells, anchors innermost
        return out.permute(0, 2, 3, 1, 4).reshape(b, h * w * a, 5 + self.classes)


class Darknet(nn.Module):
    def __init__(self, blocks: list[dict[str, str]]) -> None:
        super().__init__()
        net = blocks[0]
        self.width = int(net.get("width", 416))
        self.height = int(net.get("height", 416))
        self.blocks = blocks[1:]
        self.layers = nn.ModuleList()
        channels = [int(net.get("channels", 3))]
        out_channels: list[int] = []
        for i, blk in enumerate(self.blocks):
            kind = blk["type"]
            prev = channels[-1] if not out_channels else out_channels[-1]
            if kind == "convolutional":
                bn = int(blk.get("batch_normalize", 0))
                filters, size = int(blk["filters"]), int(blk["size"])
                stride = int(blk.get("stride", 1))
                pad = (size - 1) // 2 if int(blk.get("pad", 0)) else 0
                layer = nn.Sequential()
                layer.add_module("conv", nn.Conv2d(prev, filters, size, stride, pad, bias=not bn))
                if bn:
                    layer.add_module("bn", nn.BatchNorm2d(filters, eps=1e-5))
                act = blk.get("activation", "linear")
                if act == "leaky":
                    layer.add_module("act", nn.LeakyReLU(0.1))
                elif act != "linear":
                    raise WeightsError(f"darknet activation {act!r} not supported")
                c = filters
            elif kind == "maxpool":
                layer = _MaxPool(int(blk["size"]), int(blk["stride"]))
                c = prev
            elif kind == "upsample":
                layer = nn.Upsample(scale_factor=int(blk.get("stride", 2)), mode="nearest")
                c = prev
            elif kind == "route":
                idx = [self._abs(int(v), i) for v in blk["layers"].split(",")]
                blk["_from"] = ",".join(map(str, idx))
                layer = nn.Identity()
                c = sum(out_channels[j] for j in idx)
            elif kind == "shortcut":
                blk["_from"] = str(self._abs(int(blk["from"]), i))
                layer = nn.Identity()
                c = prev
            elif kind == "yolo":
                mask = [int(v) for v in blk["mask"].split(",")]
                vals = [float(v) for v in blk["anchors"].split(",")]
                pairs = list(zip(vals[::2], vals[1::2], strict=True))
                layer = _YoloHead(
                    [pairs[m] for m in mask], int(blk["classes"]), self.width, self.height
                )
                c = prev
            else:
                raise WeightsError(f"darknet block [{kind}] not supported")
            self.layers.append(layer)
            out_channels.append(c)

    @staticmethod
    def _abs(j: int, i: int) -> int:
        return j if j >= 0 else i + j

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        heads: list[torch.Tensor] = []
        for blk, layer in zip(self.blocks, self.layers, strict=True):
            kind = blk["type"]
            if kind == "route":
                x = torch.cat([outputs[int(j)] for j in blk["_from"].split(",")], 1)
            elif kind == "shortcut":
                x = x + outputs[int(blk["_from"])]
            elif kind == "yolo":
                heads.append(layer(x))
            else:
                x = layer(x)
            outputs.append(x)
        return torch.cat(heads, 1)

    def load_weights(self, path: str | Path) -> None:
        """Read a darknet ``.weights`` file (header, then per conv: bn or bias, then kernel)."""
        data = Path(path).read_bytes()
        major, minor, _ = np.frombuffer(data[:12], dtype=np.int32)
        offset = 12 + (8 if major * 10 + minor >= 2 else 4)
        values = np.frombuffer(data[offset:], dtype=np.float32)
        pos = 0

        def take(t: torch.Tensor) -> None:
            nonlocal pos
            n = t.numel()
            if pos + n > values.size:
                raise WeightsError(f"{path}: weights file is too short for the cfg")
            t.data.copy_(torch.from_numpy(values[pos : pos + n].copy()).view_as(t))
            pos += n

        for blk, layer in zip(self.blocks, self.layers, strict=True):
            if blk["type"] != "convolutional":
                continue
            conv = layer.conv
            if "bn" in layer._modules:
                bn = layer.bn
                for t in (bn.bias, bn.weight, bn.running_mean, bn.running_var):
                    take(t)
            else:
                take(conv.bias)
            take(conv.weight)
        if pos != values.size:
            raise WeightsError(f"{path}: {values.size - pos} unread values: cfg does not match")
