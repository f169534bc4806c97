"""Segmind: v1 sync (`POST /v1/{slug}`) and the v2 async queue (`POST /v2/{slug}`,
`GET /v2/requests/{id}[/status]`), wire-compatible with the `segmind` SDK and Segmind's pages.

Slugs (each served only when this server runs a model of that family, else 404):

| slug                              | task                   | inputs beyond the txt2img ones         |
|-----------------------------------|------------------------|----------------------------------------|
| `kandinsky2.2-txt2img`            | text to image          |                                        |
| `kandinsky2.2-img2img`            | image to image         | `image`, `strength`                    |
| `kandinsky2.2-inpainting`         | inpainting             | `image`, `mask` (white = repaint)      |
| `kandinsky2.2-fuse`               | image mixing           | `images`, `image_weights`, `prompt_weight` |
| `kandinsky2.2-controlnet-depth`   | ControlNet depth       | `image` (the depth map)                |
| `kandinsky2.1-txt2im`, `kandinsky2.1-txt2img` | text to image (both spellings are in use) | |
| `kandinsky2.1-img2img`, `kandinsky2.1-inpainting`, `kandinsky2.1-fuse` | as for 2.2 | as for 2.2 |

The txt2img parameters are Segmind's: `prompt`, `negative_prompt`, `img_width`, `img_height`,
`samples`, `num_inference_steps`, `prior_steps`, `guidance_scale`, `seed` (-1 = random),
`scheduler`, `base64`. Images are URLs, data URIs or bare base64. Numbers may be strings. Sizes
are any side from 64 to 2048, not only the 768/1024 (2.1: 512/1024) the pages list: the 2.2 page's
own example sends `img_width` 512. Image-to-image slugs default to the input image's size.

Every response, errors included, carries `x-remaining-credits`: the key's balance, 1000000000 for
a key without a limit (see `wire.UNLIMITED_CREDITS`), 0 when no valid key was sent. Errors are
`{"error": "..."}` with Segmind's statuses: 400 names the Segmind field, 401, 404, 406 when credits
run out, 429 with Retry-After, 504 when a v1 call outlasts its wait.
"""

from __future__ import annotations

from kandinsky_serve.api.dialect import Dialect
from kandinsky_serve.api.dialects.segmind import v1, v2
from kandinsky_serve.api.dialects.segmind.slugs import SLUGS, to_request
from kandinsky_serve.api.dialects.segmind.wire import render_error, router

# v1 and v2 add their routes to the one router (wire.py) when imported above
DIALECT = Dialect("segmind", router, render_error)

__all__ = ["DIALECT", "SLUGS", "render_error", "router", "to_request", "v1", "v2"]
