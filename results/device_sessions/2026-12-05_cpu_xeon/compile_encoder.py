"""torch.compile of the amplify encoder on the CPU: a training step (forward, a stand-in loss,
backward) eager against compiled, and how far the compiled gradients are from eager ones.

    PYTHONPATH=. .venv/bin/python results/device_sessions/2026-12-05_cpu_xeon/compile_encoder.py 1 96

(arguments: torch threads, images). Recorded on 2026-12-05 on the 2-core Intel Xeon with AMX,
with a quick synthetic run rendering beside it (so the times are relative only):

    compile 38.9 s
    eager 0.2 s/step
    compiled 0.194 s/step
    eager 0.201 s/step
    compiled 0.194 s/step
    max rel grad diff 0.01434631459414959

3 % faster after a 39 s compile: not worth it on the CPU, where convolutions dominate. On a GPU,
where the host's kernel launches limit a 28-px epoch, it is untested.
"""
import time, torch, sys
from dia.encoder import AmplifyEncoder
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
torch.manual_seed(0)
n = int(sys.argv[2]) if len(sys.argv) > 2 else 96
m = AmplifyEncoder().to(memory_format=torch.channels_last)
x = torch.rand(n, 3, 28, 28).contiguous(memory_format=torch.channels_last)
def step(model):
    out = model(x)
    loss = out.projection.square().mean() + out.shift_logits.square().mean()
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss
t = time.time(); mc = torch.compile(m); step(mc); print("compile", round(time.time() - t, 1), "s", flush=True)
for name, mod in [("eager", m), ("compiled", mc)] * 2:
    step(mod); t = time.time()
    for _ in range(3): step(mod)
    print(name, round((time.time() - t) / 3, 3), "s/step", flush=True)
ge = {k: p.grad.clone() for k, p in m.named_parameters()}; step(mc)
gc = {k: p.grad.clone() for k, p in m.named_parameters()}
step(m); ge = {k: p.grad.clone() for k, p in m.named_parameters()}
print("max rel grad diff", max(((ge[k] - gc[k]).norm() / (ge[k].norm() + 1e-12)).item() for k in ge))
