"""Small models, each correct or broken in one known way, for the self-tests."""
import torch

from conformance import Case, random_inputs


class Branchy(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 10


class BatchBaked(torch.nn.Module):
    """Correct in eager; a trace turns `int(x.shape[0])` into the example's batch size."""

    def forward(self, x):
        return x.reshape(int(x.shape[0]), -1)


class Noisy(torch.nn.Module):
    """Draws fresh noise each call, so two processes never agree."""

    def forward(self, x):
        return x + torch.rand_like(x)


class Unscriptable(torch.nn.Module):
    def forward(self, *inputs):
        return sum(inputs)


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.tanh(self.linear(x))


def branchy_case() -> Case:
    return Case("branchy", Branchy, example=lambda: (torch.ones(2, 3),),
                probes=lambda: [(-torch.ones(2, 3),)], tags={"control-flow"})


def batch_baked_case() -> Case:
    return Case("batch_baked", BatchBaked, example=random_inputs((1, 4, 2)), batch_sizes=(3,))


def noisy_case() -> Case:
    return Case("noisy", Noisy, example=random_inputs((2, 4)))


def unscriptable_case() -> Case:
    return Case("varargs", Unscriptable, example=random_inputs((2, 4)))


def linear_case() -> Case:
    return Case("linear", Linear, example=random_inputs((2, 4)), batch_sizes=(5,))


class CrashesInKernel(torch.nn.Module):
    """Integer division of INT64_MIN by -1 raises SIGFPE inside the CPU kernel."""

    def forward(self, x):
        lowest = torch.full([1], -2 ** 62, dtype=torch.long) * 2
        quotient = torch.div(lowest, torch.full([1], -1, dtype=torch.long), rounding_mode="trunc")
        return x + quotient.float()


class Spins(torch.nn.Module):
    """Never returns on finite inputs."""

    def forward(self, x):
        while bool(x.sum() == x.sum()):
            x = x + 0
        return x


def write_scripted(module: torch.nn.Module, file) -> None:
    torch.jit.script(module).save(str(file))


def _keep(x):
    return x.clone()


def _negate(x):
    return -x


class CondBranchy(torch.nn.Module):
    """Branchy written with torch.cond: both branches survive torch.export."""

    def forward(self, x):
        return torch.cond(x.sum() > 0, _keep, _negate, (x,))


def cond_branchy_case() -> Case:
    return Case("cond_branchy", CondBranchy, example=lambda: (torch.ones(2, 3),),
                probes=lambda: [(-torch.ones(2, 3),)], tags={"control-flow"})


class QnnpackConv(torch.nn.Module):
    """A convolution quantized for qnnpack. TorchScript packs its weights for the
    engine active when the module is loaded: loaded under x86 and run under qnnpack,
    it is one quantization step off eager."""

    def __init__(self):
        super().__init__()
        from torch.ao import quantization

        self.quant, self.dequant = quantization.QuantStub(), quantization.DeQuantStub()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = "qnnpack"
        try:
            self.eval().qconfig = quantization.get_default_qconfig("qnnpack")
            quantization.prepare(self, inplace=True)
            for _ in range(4):
                self(torch.randn(2, 3, 16, 16))
            quantization.convert(self, inplace=True)
        finally:
            torch.backends.quantized.engine = previous

    def forward(self, x):
        return self.dequant(self.conv(self.quant(x)))


def qnnpack_conv_case() -> Case:
    return Case("qnnpack_conv", QnnpackConv, example=random_inputs((1, 3, 16, 16)),
                quantized_engine="qnnpack")


@torch.jit.script
def _scaled(x: torch.Tensor, double: bool = True) -> torch.Tensor:
    if double:  # a branch on an argument the trace passes as a constant
        return x * 2
    return x


class BakedBesideScriptedHelper(torch.nn.Module):
    """A trace bakes `x.sum() > 0`, and keeps the scripted helper's unrelated `if`."""

    def forward(self, x):
        if x.sum() > 0:
            return _scaled(x)
        return x - 10


def baked_beside_helper_case() -> Case:
    return Case("baked_beside_helper", BakedBesideScriptedHelper,
                example=lambda: (torch.ones(2, 3),), tags={"control-flow"})
