"""Captures every open matplotlib figure as PNG after a run, then closes them all.

matplotlib is preconfigured with the Agg backend (MPLBACKEND and a matplotlibrc), so nothing
tries to open a window; this only looks at figures if the code imported pyplot.
"""

import base64
import io
import sys


def capture():
    """[{format, data_b64}] for each open figure, in figure-number order; [] without pyplot."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return []
    figures = []
    try:
        for number in pyplot.get_fignums():
            buffer = io.BytesIO()
            pyplot.figure(number).savefig(buffer, format="png")
            figures.append(
                {"format": "png", "data_b64": base64.b64encode(buffer.getvalue()).decode("ascii")}
            )
    finally:
        pyplot.close("all")
    return figures
