"""Measuring what the pipeline made: the quality of a die against its float model (`hardwire
quality`). It sits above the runtime because it runs dies through the backends; the other
measurement, time to correct, is `hardwire.ttc`."""
