"""What a browser would build from Relay's HTML: elements, message bodies, error texts."""

from __future__ import annotations

from html.parser import HTMLParser

Attributes = dict[str, str | None]


class Dom(HTMLParser):
    """The parts of a page or fragment the contract names, parsed once."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, Attributes]] = []
        self.bodies: dict[str, str] = {}  # message id -> decoded text of its .message-body
        self.errors: list[str] = []  # the text of every .message-error
        self._article: str | None = None
        self._body_depth = 0
        self._error_depth = 0
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        classes = (attributes.get("class") or "").split()
        if self._body_depth:
            self._body_depth += 1
        elif tag == "article" and "message" in classes:
            self._article = attributes.get("data-message-id")
        elif "message-body" in classes and self._article is not None:
            self._body_depth = 1
            self.bodies[self._article] = ""
        if self._error_depth:
            self._error_depth += 1
        elif "message-error" in classes:
            self._error_depth = 1
            self.errors.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._body_depth:
            self._body_depth -= 1
        elif tag == "article":
            self._article = None
        if self._error_depth:
            self._error_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._body_depth and self._article is not None:
            self.bodies[self._article] += data
        if self._error_depth:
            self.errors[-1] += data

    def find_all(self, tag: str, **attrs: str) -> list[Attributes]:
        """Elements named `tag` whose attributes include `attrs` (underscores become dashes)."""
        wanted = {key.replace("_", "-"): value for key, value in attrs.items()}
        return [a for t, a in self.elements
                if t == tag and all(a.get(k) == v for k, v in wanted.items())]

    def find(self, tag: str, **attrs: str) -> Attributes:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag} {attrs}>, found {len(found)}"
        return found[0]

    @property
    def articles(self) -> list[Attributes]:
        return [a for t, a in self.elements
                if t == "article" and "message" in (a.get("class") or "").split()]
