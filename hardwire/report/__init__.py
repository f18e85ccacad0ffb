"""`hardwire report`: one self-contained HTML page that shows a die or a preset as a chip."""
