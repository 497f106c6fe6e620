"""GPU time by CUDA kernel from a torch.profiler run (CUPTI sees the kernels of every library in the process:
ORT's, cuDNN's and ours; ORT's own profiler times CUDA nodes on the host, at launch, so it cannot say this).
Used by e2e.py, gen_bench.py and decode_probe.py."""


def kernel_totals(prof, name_width=None):
    """{kernel name: total GPU µs} over the profiled region; names cut to `name_width` characters are merged."""
    from torch.autograd import DeviceType

    out = {}
    for e in prof.key_averages():
        if e.device_type == DeviceType.CUDA:
            t = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
            name = e.key if name_width is None else e.key[:name_width]
            out[name] = out.get(name, 0) + t
    return out


def heaviest(totals, top=None):
    """(name, µs) pairs, heaviest first, at most `top` of them."""
    return sorted(totals.items(), key=lambda kv: -kv[1])[:top]
