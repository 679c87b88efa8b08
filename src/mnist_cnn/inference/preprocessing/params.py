"""Every tunable number of the image pipeline, in one typed object, with its unit and its reason.

``preprocess(image, params=Params(...))`` runs the pipeline with other values, so a benchmark can
sweep them (``dataclasses.replace(DEFAULT, mass_pow=0.7)``) without editing code. Unless a comment
says otherwise, "analysis px" are pixels of the analysis copy (longer side <= ``analysis_side``),
grey levels are of 255, and a value "chosen on validation renderings" was picked on
``benchmarks/photo_testset.py --split val --seed 1`` (validation digits, never test digits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class LineRule(NamedTuple):
    """What counts as a straight line: at most ``max_thick`` px thick, at least ``per_thick`` x its
    thickness and ``min_px`` long (and the caller's ``min_len``); if ``straight``, the band it lies in
    at most ``straight`` x its mean thickness + 1 px (a curved stroke spreads over a wider band).
    Slants up to ``Params.line_angle`` from the horizontal, or ``turn`` degrees more when the strongest
    line is turned that far (a page photographed askew)."""

    max_thick: int
    per_thick: float
    min_px: int
    straight: float = 0.0
    turn: float = 0.0


@dataclass(frozen=True)
class Params:
    """The pipeline's tunable numbers (see the module docstring for units and provenance)."""

    # ---- resolution
    analysis_side: int = 512  # px: longer side of the copy the digit is found on (background, threshold, components)
    work_side: int = 1000  # px: the full-resolution crop is box-reduced to at most this (still 50x the output)
    # a JPEG is decoded reduced by its DCT (1/2, 1/4, 1/8) while its longer side stays >= this: the
    # crop then still has >= 5x the output's 20 px for a digit a tenth of the photo's height
    jpeg_min_side: int = 1600
    # a picture of a number smaller than this is enlarged before its rows are looked for (chosen on
    # validation photos among 160, 192 and 256)
    row_min_side: int = 192

    # ---- ink and background
    min_contrast: float = 20.0  # grey levels of ink above the background needed to call it a digit
    noise_k: float = 4.0  # the ink threshold is >= this many robust sigmas of the background
    # grey levels the smoothed background may depart from the morphological one towards the ink ...
    edge_slack: float = 40.0
    # ... and towards the paper: at most the lowest ink threshold, so a band of a dark table beside a
    # page edge never becomes ink on its own, while a stroke inside a hard shadow keeps a little of the
    # lift. Validation renderings, 0 / 10 / 20 / 40: page_edge 98.0 / 98.0 / 97.3 / 92.0%, shadow
    # 97.3 / 98.7 / 98.0 / 96.0%
    spill: float = 10.0
    # the paper's brightness: this percentile of the border's (validation renderings: the median took
    # a shadow or the table beyond a page edge for the paper, 15 of 600 wrong polarities)
    paper_percentile: float = 90.0

    # ---- page structure: ruled and squared paper, forms' boxes
    line_angle: float = 12.0  # degrees a ruled line may slant (roll, perspective)
    line_step: float = 0.5  # degrees: the slant search's step
    # degrees a page may be turned further (a photo taken askew): the paper line search then also
    # covers line_angle around the strongest line's slant (validation notebook pages at 20-35 degrees
    # of perspective had far lines at 12-14 degrees, glued to the digit). Not for a form's box: within
    # it, the strongest line may be a stroke (a 5's bar)
    line_turn: float = 15.0
    line_max_thick: int = 7  # analysis px: a ruled line or a form box is 1-7 px; a pen stroke along it is wider
    line_min_span: float = 0.4  # a ruled line runs across at least this fraction of the picture
    lone_line_span: float = 0.8  # a single line (no parallel one) must run across this much of the picture
    # of three or more parallel lines, a line's band holding more than this x their typical thickness
    # holds a stroke along it there, which stays ink (a 1 beside a squared line was taken away with
    # it). Validation numbers (seed 1, 150 each): squared paper 0.853 -> 0.907 read exactly, ruled
    # 0.940 -> 0.953, no condition lower
    line_stroke: float = 2.0
    # analysis px beside a removed line whose faint ink goes from a component touching the border (the
    # line's fringe chained the digits to it). Validation numbers (seed 1, 150 each): grid 90.7 -> 91.3%,
    # all 90.0 -> 91.3%, the other lined conditions unchanged; single-digit pages unchanged but
    # notebook_all 86.7 -> 86.3% (one 8 whose preprocessing leaves a fragment either way)
    line_halo: int = 2
    # rows (number reader): paper darker than this x the lit paper is in shade, where digits are looked
    # for again with thresholds scaled by the paper's brightness, and kept when their ink is this strong
    # against their paper relative to the lit digits' (rows.in_shade). Validation numbers (seed 1, 150
    # each): shadow 94.7 -> 96.7%, every other condition unchanged; without the contrast test page_edge
    # fell 95.3 -> 89.3% (the table's grain read as digits)
    shade: float = 0.7
    shade_contrast: float = 0.7
    frame_inside: float = 0.1  # ink inside a three-sided frame, as a fraction of the frame's
    edge_cover: float = 0.9  # a side hidden in a stroke's band: the box's outer edge inked along this much
    frame_slack: int = 2  # px of ink across a frame's side beyond the side's own: more is a stroke, kept

    # ---- choosing the digit
    # a component's claim to be the digit grows with the square root of its ink: a thin ballpoint
    # digit has a tenth of a marker's ink. Validation renderings (300 each), power 1 / 0.7 / 0.5 / 0.3:
    # notebook_all 256 / 261 / 261 / 261 of 300; the other conditions equal
    mass_pow: float = 0.5
    # ... times this for things touching the border and a comb's dividers (validation: form_box 291 ->
    # 292 of 300, notebook_all 247 -> 248)
    aside: float = 0.1
    chain_reach: float = 0.25  # pieces of the digit join from this fraction of its box's size
    speck_mass: float = 0.05  # a component with less ink than this fraction of the main one's is a speck
    speck_reach: float = 0.4  # specks join the digit from this fraction of the usual distance
    # ... other pieces that no removed line runs beside, from this fraction. Validation renderings,
    # 1.0 / 0.8 / 0.6 / 0.4: notebook_all 248 / 249 / 251 / 252, stray_marks 298 / - / 300 / 300. 0.6,
    # not 0.4: real writers lift the pen (a 5's bar, a 4's top) further apart than MNIST's digits
    free_reach: float = 0.6

    # ---- rendering to 28x28: stroke width at the 28x28 scale (2*area/perimeter of the >=128 mask).
    # MNIST test digits: 5th percentile 2.05, median 2.66, 95th percentile 4.1. Thinner than
    # stroke_thin: thickened to stroke_target; thicker than stroke_thick (a bold marker, beyond
    # MNIST's range): thinned to thick_target
    stroke_thin: float = 2.0
    stroke_target: float = 2.6
    stroke_thick: float = 6.0
    thick_target: float = 4.5
    com_target: tuple[float, float] = (14.0, 14.0)  # mean centre of mass (row, col) of MNIST test digits

    @property
    def paper_line(self) -> LineRule:
        """Ruled and squared paper over the whole picture: at least 12x as long as thick (a short thick
        bar is a stroke, e.g. a 7's top) and 24 px (a 28x28 digit's bars, up to 20 px, are never lines)."""
        return LineRule(self.line_max_thick, 12, 24, turn=self.line_turn)

    @property
    def frame_line(self) -> LineRule:
        """A form's printed box, searched only around the digit, where each side must also span most of
        the box: it may be twice as bold, and a bold side of a narrow box (around a 1) is short for its
        thickness, so 8x its thickness is long enough; and straight: a thin pen's 7 has a straight bar,
        but its stem, bent a little, fills a band 2.6x as wide as the stroke (validation boxes: <= 1.6x)."""
        return LineRule(2 * self.line_max_thick, 8, 24, straight=1.5)


DEFAULT = Params()
