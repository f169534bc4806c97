"""The multistep schedulers' pure forms: DPM++ 2M (+Karras), UniPC and PLMS (engine.pure_schedulers).

A multistep solver remembers past model outputs, and diffusers picks the formula by step number
(warm-up at the start, a lower order at the end). Here the history is latents-shaped state tensors
the step takes and returns (zeros before the first step), and every step runs the same operations:
either one formula whose history weights are 0 where diffusers drops the history term (exact: the
history is finite, so those terms add a zero), or, where diffusers' formulas are not one formula
with other weights (PLMS's warm-up, UniPC's first step without corrector), all candidates computed
and the step's own picked by `torch.where` on a flag in its coefficient row. Each kept formula has
diffusers' operations in diffusers' order, so float32 results are bit-identical.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DPMSolverMultistepScheduler, PNDMScheduler, UniPCMultistepScheduler

from kandinsky_serve.engine.pure_schedulers import Builder, PureScheduler, State, _no_scale, _x0_fix
from kandinsky_serve.engine.schedulers import SchedulerAdapter

_ZERO = torch.tensor(0.0)
_ONE = torch.tensor(1.0)


def _identity(x0: torch.Tensor) -> torch.Tensor:
    return x0


def _dpm_solver(adapter: SchedulerAdapter, timesteps: torch.Tensor) -> PureScheduler | None:
    """DPM++ 2M (and Karras): second order from the last x0, first order at the first step and where
    diffusers lowers the order at the end; both as one formula whose history weight is 0 there."""
    s = adapter.scheduler
    c = s.config
    if (c.algorithm_type, c.solver_order, c.solver_type) != ("dpmsolver++", 2, "midpoint") or (
        c.variance_type is not None or c.use_flow_sigmas
    ):
        return None
    start, full = len(s.timesteps) - len(timesteps), len(s.timesteps)

    def alpha_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = 1 / ((sigma**2 + 1) ** 0.5)
        return alpha, sigma * alpha

    def lam(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.log(alpha) - torch.log(sigma)

    rows = []
    for i in range(len(timesteps)):
        index = start + i
        lower_final = index == full - 1 and (
            c.euler_at_final or (c.lower_order_final and full < 15) or c.final_sigmas_type == "zero"
        )
        alpha_s0, sigma_s0 = alpha_sigma(s.sigmas[index])
        alpha_t, sigma_t = alpha_sigma(s.sigmas[index + 1])
        h = lam(alpha_t, sigma_t) - lam(alpha_s0, sigma_s0)
        direct = alpha_t * (torch.exp(-h) - 1.0)
        if i == 0 or lower_final:  # first order: no history term (its weights 0: nothing undefined)
            inv_r0, half = _ZERO, _ZERO
        else:
            alpha_s1, sigma_s1 = alpha_sigma(s.sigmas[index - 1])
            r0 = (lam(alpha_s0, sigma_s0) - lam(alpha_s1, sigma_s1)) / h
            inv_r0, half = 1.0 / r0, 0.5 * direct
        rows.append(torch.stack([sigma_s0, alpha_s0, sigma_t / sigma_s0, direct, inv_r0, half]))
    fix = _x0_fix(c) if c.thresholding else _identity

    def update(
        out: torch.Tensor, latents: torch.Tensor, k: torch.Tensor, noise: torch.Tensor | None, state: State
    ) -> tuple[torch.Tensor, State]:
        assert state is not None  # the loop starts it at zeros: the same graph at every step
        (last_x0,) = state
        x0 = fix((latents - k[0] * out) / k[1])  # convert_model_output, before the float32 upcast
        sample = latents.to(torch.float32)
        d1 = k[4] * (x0 - last_x0)
        prev = k[2] * sample - k[3] * x0 - k[5] * d1
        return prev.to(out.dtype), (x0,)

    return PureScheduler("DPM++ 2M", torch.stack(rows).float().cpu(), [False] * len(rows), update, _no_scale, 1)


def _unipc_terms(
    s: Any, index: int, order: int, corrector: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """diffusers' multistep_uni_p_bh_update (corrector False: from sigma[index] to sigma[index + 1]) or
    multistep_uni_c_bh_update (True: from index - 1 to index), its scalar part, op for op (predict_x0,
    bh2): (sigma ratio, alpha_t h_phi_1, alpha_t B_h, r_1 (1 without history), the history weight (0
    without), the weight of this step's own x0 difference (corrector only))."""
    to_alpha_sigma = s._sigma_to_alpha_sigma_t
    sigmas: torch.Tensor = s.sigmas
    t_index, s0_index = (index, index - 1) if corrector else (index + 1, index)
    alpha_t, sigma_t = to_alpha_sigma(sigmas[t_index])
    alpha_s0, sigma_s0 = to_alpha_sigma(sigmas[s0_index])
    lambda_t = torch.log(alpha_t) - torch.log(sigma_t)
    lambda_s0 = torch.log(alpha_s0) - torch.log(sigma_s0)
    h = lambda_t - lambda_s0
    rks = []
    for i in range(1, order):
        alpha_si, sigma_si = to_alpha_sigma(sigmas[s0_index - i])
        lambda_si = torch.log(alpha_si) - torch.log(sigma_si)
        rks.append((lambda_si - lambda_s0) / h)
    rk = rks[0] if rks else _ONE
    rks.append(torch.ones(()))
    stacked = torch.stack(rks)
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial_i = 1
    b_h = torch.expm1(hh)
    r_rows, b = [], []
    for i in range(1, order + 1):
        r_rows.append(torch.pow(stacked, i - 1))
        b.append(h_phi_k * factorial_i / b_h)
        factorial_i *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial_i
    r, bs = torch.stack(r_rows), torch.stack(b)
    if corrector:
        rhos = torch.ones(1) * 0.5 if order == 1 else torch.linalg.solve(r, bs)
        history, own = (rhos[0] if order == 2 else _ZERO), rhos[-1]
    else:
        history, own = (torch.tensor(0.5) if order == 2 else _ZERO), _ZERO
    return sigma_t / sigma_s0, alpha_t * h_phi_1, alpha_t * b_h, rk, history, own


def _unipc(adapter: SchedulerAdapter, timesteps: torch.Tensor) -> PureScheduler | None:
    """UniPC (bh2, predict_x0, order 2): the UniC corrector on this step's sample from the last
    sample and x0s (not at the first step), then the UniP predictor from the corrected sample; the
    order is 1 at the first step and, with lower_order_final, at the last. State: (last x0, the x0
    before it, the last corrected sample)."""
    s = adapter.scheduler
    c = s.config
    if (c.solver_order, c.solver_type, s.predict_x0, s.solver_p) != (2, "bh2", True, None) or (
        c.use_flow_sigmas or list(c.disable_corrector)
    ):
        return None
    start, full = len(s.timesteps) - len(timesteps), len(s.timesteps)
    rows, order = [], 1  # order: the last step's predictor order, which the next corrector takes
    for i in range(len(timesteps)):
        index = start + i
        alpha, sigma = s._sigma_to_alpha_sigma_t(s.sigmas[index])
        corrector = _unipc_terms(s, index, order, True) if i > 0 else (_ONE, _ZERO, _ZERO, _ONE, _ZERO, _ZERO)
        order = min(min(2, full - index) if c.lower_order_final else 2, min(i, 2) + 1)
        predictor = _unipc_terms(s, index, order, False)
        flag = _ONE if i > 0 else _ZERO
        rows.append(torch.stack([sigma, alpha, *corrector, flag, *predictor[:5]]))
    fix = _x0_fix(c) if c.thresholding else _identity

    def update(
        out: torch.Tensor, latents: torch.Tensor, k: torch.Tensor, noise: torch.Tensor | None, state: State
    ) -> tuple[torch.Tensor, State]:
        assert state is not None
        m0, m1, last = state
        x0 = fix((latents - k[0] * out) / k[1])  # convert_model_output, from the uncorrected sample
        # UniC: the history term's weight k[6] is 0 at order 1; rhos cast to the latents' dtype as diffusers does
        rhos_c = k[6:8].to(latents.dtype)
        d1s = torch.stack([(m1 - m0) / k[5]], dim=1)
        corr_res = torch.einsum("k,bkc...->bc...", rhos_c[:1], d1s)
        corrected = k[2] * last - k[3] * m0
        corrected = corrected - k[4] * (corr_res + rhos_c[-1] * (x0 - m0))
        sample = torch.where(k[8] > 0, corrected.to(latents.dtype), latents)
        # UniP: the history weight k[12] is 0 at order 1
        d1s = torch.stack([(m0 - x0) / k[12]], dim=1)
        pred_res = torch.einsum("k,bkc...->bc...", k[13:14].to(latents.dtype), d1s)
        prev = k[9] * sample - k[10] * x0
        prev = prev - k[11] * pred_res
        return prev.to(latents.dtype), (x0, m0, sample)

    return PureScheduler("UniPC", torch.stack(rows).float().cpu(), [False] * len(rows), update, _no_scale, 3)


def _plms(adapter: SchedulerAdapter, timesteps: torch.Tensor) -> PureScheduler | None:
    """PLMS (PNDM with skip_prk_steps): a linear multistep formula over up to four past outputs.
    Its first two steps are a warm-up by step count (not by timestep, so img2img too): the first
    keeps its sample, the second averages its output with the first's and steps from that kept
    sample again (from t + ratio to t; the schedule repeats a timestep there), without adding to the
    history. State: the last three outputs, newest first, and the first step's sample."""
    s = adapter.scheduler
    if not s.config.skip_prk_steps:
        return None
    ratio = s.config.num_train_timesteps // s.num_inference_steps
    rows = []
    for i, t in enumerate(int(t) for t in timesteps.cpu()):
        timestep, prev_timestep = (t + ratio, t) if i == 1 else (t, t - ratio)
        a_t = s.alphas_cumprod[timestep]
        a_prev = s.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else s.final_alpha_cumprod
        beta_t, beta_prev = 1 - a_t, 1 - a_prev
        sample_coeff = (a_prev / a_t) ** (0.5)
        denom = a_t * beta_prev ** (0.5) + (a_t * beta_t * a_prev) ** (0.5)
        rows.append(torch.stack([sample_coeff, a_prev - a_t, denom, torch.tensor(float(min(i, 4)))]))

    def update(
        out: torch.Tensor, latents: torch.Tensor, k: torch.Tensor, noise: torch.Tensor | None, state: State
    ) -> tuple[torch.Tensor, State]:
        assert state is not None
        e1, e2, e3, first = state
        mode = k[3]  # the step count, up to 4: which of diffusers' formulas this step takes
        eps = (1 / 24) * (55 * out - 59 * e1 + 37 * e2 - 9 * e3)
        eps = torch.where(mode == 3, (23 * out - 16 * e1 + 5 * e2) / 12, eps)
        eps = torch.where(mode == 2, (3 * out - e1) / 2, eps)
        eps = torch.where(mode == 1, (out + e1) / 2, eps)
        eps = torch.where(mode == 0, out, eps)
        second = mode == 1
        sample = torch.where(second, first, latents)
        prev = k[0] * sample - k[1] * eps / k[2]
        history = (torch.where(second, e1, out), torch.where(second, e2, e1), torch.where(second, e3, e2))
        return prev, (*history, torch.where(mode == 0, latents, first))

    return PureScheduler("PLMS", torch.stack(rows).float().cpu(), [False] * len(rows), update, _no_scale, 4)


BUILDERS: dict[type, Builder] = {
    DPMSolverMultistepScheduler: _dpm_solver,
    UniPCMultistepScheduler: _unipc,
    PNDMScheduler: _plms,
}
