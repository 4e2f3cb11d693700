"""The toy decoder's pipeline: image embeddings -> images with KandinskyV22Pipeline's call signature.

A diffusers `DiffusionPipeline` saved and loaded with `save_pretrained` / `from_pretrained`, so the renderer
uses it exactly as it uses Kandinsky. Its "latents" are the pixels folded space-to-depth (`pixel_unshuffle`),
and it L2-normalises the conditioning embeddings (times sqrt(d)) itself. Trained by `atlas.toyworld.decoder_model`.
"""

from __future__ import annotations

import math

import torch
from diffusers import DDIMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor

# Classifier-free guidance for this model: above ~2 its samples oversaturate into the wrong colours (its
# unconditional branch saw only the 10% of dropped conditions), while 1-2 draw the scene the embedding shows.
GUIDANCE = 1.5


def _condition(e: torch.Tensor) -> torch.Tensor:
    return e / e.norm(dim=-1, keepdim=True).clamp_min(1e-6) * math.sqrt(e.shape[-1])


def _fold(unet: UNet2DConditionModel) -> int:
    """The space-to-depth factor of the pipeline's latents (1 for a UNet that works on the pixels)."""
    return math.isqrt(unet.config.in_channels // 3)


class ToyDecoderPipeline(DiffusionPipeline):
    """Image embeddings -> images, with KandinskyV22Pipeline's arguments."""

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DConditionModel, scheduler: DDIMScheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(channels, h, w) of the starting noise for `height` x `width` images: the pixels folded space-to-depth."""
        fold = _fold(self.unet)
        return 3 * fold * fold, height // fold, width // fold

    @torch.no_grad()
    def __call__(
        self,
        image_embeds: torch.Tensor,
        negative_image_embeds: torch.Tensor,
        height: int = 32,
        width: int = 32,
        num_inference_steps: int = 25,
        guidance_scale: float = GUIDANCE,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        device = self._execution_device
        dtype = self.unet.dtype
        pos = _condition(image_embeds.to(device, torch.float32)).repeat_interleave(num_images_per_prompt, 0)
        neg = _condition(negative_image_embeds.to(device, torch.float32)).repeat_interleave(num_images_per_prompt, 0)
        n, fold = pos.shape[0], _fold(self.unet)
        shape = (n, *self.latent_shape(height, width))
        x = latents if latents is not None else randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        x = x * self.scheduler.init_noise_sigma
        guided = guidance_scale > 1.0
        cond = torch.cat([neg, pos]).to(dtype) if guided else pos.to(dtype)
        for t in self.progress_bar(self.scheduler.timesteps):
            inp = torch.cat([x, x]) if guided else x
            out = self.unet(inp, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": cond}).sample
            if guided:
                uncond, cond_out = out.chunk(2)
                out = uncond + guidance_scale * (cond_out - uncond)
            x = self.scheduler.step(out, t, x, generator=generator).prev_sample
        images = (torch.nn.functional.pixel_shuffle(x.float(), fold) / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            result = images
        else:
            result = images.permute(0, 2, 3, 1).cpu().numpy()
            if output_type == "pil":
                result = self.numpy_to_pil(result)
        return ImagePipelineOutput(images=result) if return_dict else (result,)
