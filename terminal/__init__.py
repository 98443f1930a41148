"""The terminal client (``manage.py chat``): the terminal twin of the web transport in ``chat/``.

``render`` turns stored messages and conversations into lines for a terminal (rich), ``sink``
turns a reply's typed events into those lines as they arrive, ``session`` reads what the person
types and calls the same selectors, services and actions the page does.
"""
