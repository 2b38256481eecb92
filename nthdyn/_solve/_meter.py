"""The progress bar of a solve (`progress=True`)."""

import diffrax


class SpanProgressMeter(diffrax.TqdmProgressMeter):
    """diffrax's tqdm bar, labelled as what it counts: the share of the time span (or of
    the steps) done, with the time elapsed and left (no "%/s" rate)."""

    @staticmethod
    def _init_bar():
        import tqdm

        return tqdm.tqdm(total=100, unit="%", bar_format=(
            "{percentage:5.1f}% of the span |{bar}| {elapsed} elapsed, {remaining} left"))
