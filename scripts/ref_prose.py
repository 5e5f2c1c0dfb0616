"""Natural prose shared by make_reference.py (the long prompt) and bench_transformers.py
(token windows for the prefill and decode workloads). Distinct paragraphs, not one sentence
repeated, so the KV cache sees realistic, non-periodic content."""

LONG_PROSE = """\
The lighthouse at the end of the northern breakwater was built in 1874, when the harbour was still \
a busy port for timber and salted fish. Its first keeper, a former ship's carpenter named Elias Marr, \
kept a logbook in which he recorded the weather three times a day, the ships that passed, and the \
small repairs he made to the lamp. Those notebooks survive in the town archive, and they show a man \
who was patient, precise, and a little lonely.

In winter the storms came from the east. Waves broke over the stone pier and froze on the railings, \
so that by morning the whole structure looked as if it had been dipped in glass. Marr wrote that he \
could hear the ice cracking in the dark like distant gunfire. On the worst nights he climbed the \
ninety-two steps every hour to trim the wick and wipe the salt from the windows, because a lamp that \
could not be seen was worse than no lamp at all.

The town changed slowly around him. A railway line arrived in 1889 and the timber trade moved inland. \
The fishing fleet shrank from forty boats to eleven. Young people left for the cities, and the houses \
near the harbour were sold to painters and retired teachers who liked the light on the water. By the \
time electricity reached the tower in 1931, nobody remembered that the keeper's cottage had once been \
the busiest building on the quay.

Today the lighthouse is automated. A small computer switches the lamp on at dusk and sends a message \
to the coast guard if anything fails. Visitors can climb the tower on summer weekends, and a volunteer \
at the door sells postcards and tells the story of the keeper who never missed a night. Children are \
usually more interested in the view: on a clear day you can see the islands to the south, the wind \
farm on the horizon, and the ferries crossing to the mainland twice an hour.

Historians who study such places often say that infrastructure is invisible until it breaks. A road, \
a bridge, or a water main is noticed only when it is closed for repair. Lighthouses are an exception. \
They were designed to be seen, and their whole purpose was to be noticed by strangers at the worst \
possible moment. Perhaps that is why so many people still feel affection for them, long after satellite \
navigation made most of them unnecessary.

There is also a practical lesson in Marr's notebooks. He wrote down what he did, when he did it, and \
what happened afterwards. When a lens cracked in 1880, he could show the harbour board exactly how \
many hours the lamp had burned and how often the glass had been cleaned. The board paid for a new lens \
without argument. Careful records, he noted dryly, are cheaper than arguments.
"""

# Extra, different prose used only to build distinct benchmark prompts.
BENCH_PROSE_EXTRA = """\
A good loaf of bread needs only flour, water, salt and time. The baker mixes the dough in the evening \
and leaves it in a cool room overnight, where wild yeast and bacteria slowly turn starch into gas and \
acid. In the morning the dough is shaped, rested again, and baked in a very hot oven with a tray of \
water underneath to make steam. The crust darkens, the inside sets, and the kitchen fills with a smell \
that no candle has ever managed to copy.

Mountain weather changes quickly. A hiker who starts under a blue sky may find herself in fog an hour \
later, with the path disappearing a few metres ahead. Experienced walkers carry a map, a compass, a \
spare layer and something warm to drink, and they turn back early rather than late. The summit will \
still be there next week; the point of the walk is to come home and tell someone about it.
"""
