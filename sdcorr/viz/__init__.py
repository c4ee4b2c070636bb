"""Visual outputs: match plots, PCA-RGB feature pictures, the swap image and the swap GIF.

One module per job:

* :mod:`~sdcorr.viz.canvas`: input checks, resizing and the one A | B canvas (:func:`side_by_side`);
* :mod:`~sdcorr.viz.swap`: the swap image and the swap animation's frames;
* :mod:`~sdcorr.viz.pca`: PCA colours of feature maps (through :func:`sdcorr.fusion.joint_pca`);
* :mod:`~sdcorr.viz.plots`: match lines, the similarity heat map, the point marker;
* :mod:`~sdcorr.viz.files`: the GIF, PNG and PCA-panel writers (atomic).

Everything works on ``(H, W, 3)`` uint8 RGB arrays (PIL images are accepted as inputs) and is
vectorised. matplotlib is imported only when a plot is drawn, so importing this package changes
no global state. Coordinates follow the package convention: ``(x, y)`` in original pixels, pixel
centres at integer coordinates.
"""

from __future__ import annotations

from .canvas import side_by_side
from .files import save_gif, save_pca, save_png
from .pca import pca_images, pca_panel, pca_rgb
from .plots import MARKER_RGB, draw_marker, heatmap, marker_centre, plot_matches
from .swap import ease_out, swap_frames, swap_frames_from_flow, swap_image

__all__ = [
    "MARKER_RGB",
    "draw_marker",
    "ease_out",
    "heatmap",
    "marker_centre",
    "pca_images",
    "pca_panel",
    "pca_rgb",
    "plot_matches",
    "save_gif",
    "save_pca",
    "save_png",
    "side_by_side",
    "swap_frames",
    "swap_frames_from_flow",
    "swap_image",
]
