"""What the demo prints after training (issue 15, part 9, the small part): a catalogue without prices."""

from __future__ import annotations

from client.device import Recommendation
from simulations.report import result_line


def test_a_result_without_price_or_category_prints():
    full = Recommendation("i1", "tent", 0.5, category="Camping", price=19.5)
    assert result_line(1, full) == "   1. tent  (Camping, $19.50)  score 0.500"
    assert result_line(2, Recommendation("i2", "mug", 0.25)) == "   2. mug  score 0.250"
    assert result_line(3, Recommendation("i3", "pan", 0.1, category="Kitchen", price=float("nan"))) == (
        "   3. pan  (Kitchen)  score 0.100"
    )
