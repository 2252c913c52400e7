"""The GCN encoders written the way the official code computes them: the test oracle for
``skelfast.nn.STGCN`` / ``skelfast.nn.AGCN`` and the baseline of ``benchmarks/bench_encoders.py``.

``OfficialSTGCN`` is AimCLR/HiCLR's ``net/st_gcn.py`` (nn.Conv2d 1x1 + einsum ``nkctv,kvw->nctw``,
nn.BatchNorm2d, nn.Dropout); ``OfficialAGCN`` is skeleton-contrast's ``moco/AGCN.py`` (one matmul and
one conv per subset). Both have the official state_dict layout, which is also the layout of the
skelfast encoders, so weights move between them with ``load_state_dict``. Initialisation is
PyTorch's default: load weights before comparing.
"""

from __future__ import annotations

import torch
from torch import nn

from skelfast.nn.graph import agcn_graph, stgcn_graph


class _ConvTemporalGraphical(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(in_channels, out_channels * kernel_size, kernel_size=(1, 1))

    def forward(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        n, kc, t, v = x.size()
        x = x.view(n, self.kernel_size, kc // self.kernel_size, t, v)
        return torch.einsum("nkctv,kvw->nctw", x, A).contiguous()


class _STGCNUnit(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, dropout: float, residual: bool) -> None:
        super().__init__()
        self.gcn = _ConvTemporalGraphical(cin, cout, k)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, (9, 1), (stride, 1), (4, 0)),
            nn.BatchNorm2d(cout),
            nn.Dropout(dropout, inplace=True),
        )
        if not residual:
            self.residual = lambda x: 0
        elif cin == cout and stride == 1:
            self.residual = lambda x: x
        else:
            self.residual = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=(stride, 1)), nn.BatchNorm2d(cout)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        res = self.residual(x)
        x = self.tcn(self.gcn(x, A)) + res
        return self.relu(x)


class OfficialSTGCN(nn.Module):
    """AimCLR/HiCLR ``Model`` with the MLP head; x (N, C, T, V, M) -> (N, num_class)."""

    def __init__(
        self, hidden_channels: int = 64, hidden_dim: int = 256, num_class: int = 128, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.register_buffer("A", stgcn_graph("ntu", "spatial"))
        k, v = self.A.shape[0], self.A.shape[1]
        h = hidden_channels
        plan = [(3, h, 1), (h, h, 1), (h, h, 1), (h, h, 1), (h, 2 * h, 2), (2 * h, 2 * h, 1), (2 * h, 2 * h, 1),
                (2 * h, 4 * h, 2), (4 * h, 4 * h, 1), (4 * h, hidden_dim, 1)]  # fmt: skip
        self.data_bn = nn.BatchNorm1d(3 * v)
        self.st_gcn_networks = nn.ModuleList(
            _STGCNUnit(cin, cout, k, s, 0.0 if i == 0 else dropout, residual=i > 0)
            for i, (cin, cout, s) in enumerate(plan)
        )
        for i in range(1, 11):
            self.register_parameter(f"edge_importance{i}", nn.Parameter(torch.ones_like(self.A)))
        self.fc = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_class)
        )

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v, m = x.size()
        x = x.permute(0, 4, 3, 1, 2).contiguous().view(n * m, v * c, t)
        x = self.data_bn(x)
        x = x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).contiguous().view(n * m, c, t, v)
        for i, unit in enumerate(self.st_gcn_networks):
            x = unit(x, self.A * getattr(self, f"edge_importance{i + 1}"))
        x = nn.functional.avg_pool2d(x, x.size()[2:])
        return x.view(n, m, -1).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.representation(x))


class _UnitTCN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int = 9, stride: int = 1) -> None:
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.conv = nn.Conv2d(cin, cout, kernel_size=(kernel_size, 1), padding=(pad, 0), stride=(stride, 1))
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class _UnitGCN(nn.Module):
    def __init__(self, cin: int, cout: int, A: torch.Tensor) -> None:
        super().__init__()
        self.inter_c = cout // 4
        self.A = A  # not in the state_dict, as in the official code
        self.PA = nn.Parameter(torch.full_like(A, 1e-6))
        self.num_subset = A.shape[0]
        self.conv_a = nn.ModuleList(nn.Conv2d(cin, self.inter_c, 1) for _ in range(self.num_subset))
        self.conv_b = nn.ModuleList(nn.Conv2d(cin, self.inter_c, 1) for _ in range(self.num_subset))
        self.conv_d = nn.ModuleList(nn.Conv2d(cin, cout, 1) for _ in range(self.num_subset))
        if cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout))
        else:
            self.down = lambda x: x
        self.bn = nn.BatchNorm2d(cout)
        self.soft = nn.Softmax(-2)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v = x.size()
        A = self.A.to(x) + self.PA
        y = None
        for i in range(self.num_subset):
            a1 = self.conv_a[i](x).permute(0, 3, 1, 2).contiguous().view(n, v, self.inter_c * t)
            a2 = self.conv_b[i](x).view(n, self.inter_c * t, v)
            a1 = self.soft(torch.matmul(a1, a2) / a1.size(-1))
            a1 = a1 + A[i]
            z = self.conv_d[i](torch.matmul(x.view(n, c * t, v), a1).view(n, c, t, v))
            y = z + y if y is not None else z
        y = self.bn(y)
        y = y + self.down(x)
        return self.relu(y)


class _TCNGCNUnit(nn.Module):
    def __init__(self, cin: int, cout: int, A: torch.Tensor, stride: int = 1, residual: bool = True) -> None:
        super().__init__()
        self.gcn1 = _UnitGCN(cin, cout, A)
        self.tcn1 = _UnitTCN(cout, cout, stride=stride)
        self.relu = nn.ReLU()
        if not residual:
            self.residual = lambda x: 0
        elif cin == cout and stride == 1:
            self.residual = lambda x: x
        else:
            self.residual = _UnitTCN(cin, cout, kernel_size=1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.tcn1(self.gcn1(x)) + self.residual(x))


class OfficialAGCN(nn.Module):
    """skeleton-contrast ``AGCN.Model`` with ISC's MLP head; x (N, C, T, V, M) -> (N, num_class)."""

    def __init__(self, num_class: int = 128) -> None:
        super().__init__()
        A = agcn_graph("ntu")
        self.data_bn = nn.BatchNorm1d(2 * 3 * 25)
        plan = [(3, 64, 1), (64, 64, 1), (64, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 128, 1),
                (128, 256, 2), (256, 256, 1), (256, 256, 1)]  # fmt: skip
        for i, (cin, cout, s) in enumerate(plan, start=1):
            self.add_module(f"l{i}", _TCNGCNUnit(cin, cout, A, stride=s, residual=i > 1))
        self.fc = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, num_class))

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v, m = x.size()
        x = x.permute(0, 4, 3, 1, 2).contiguous().view(n, m * v * c, t)
        x = self.data_bn(x)
        x = x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).contiguous().view(n * m, c, t, v)
        for i in range(1, 11):
            x = getattr(self, f"l{i}")(x)
        return x.view(n, m, x.size(1), -1).mean(3).mean(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.representation(x))
