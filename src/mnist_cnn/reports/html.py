"""Reports: run artifacts (metrics, classification report, confusion matrix, learning curves),
the self-contained HTML/Markdown report builder and each run's ``report.html``.

Plots use matplotlib's Agg backend (no display needed) and are written atomically. An HTML report
is one file: figures are embedded as base64 data URIs, the CSS is inline, there is no script and
nothing is fetched from the network, so it opens offline, on a phone and prints cleanly. The same
content is written as ``summary.md`` (figures linked) for pasting into issues and pull requests.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from mnist_cnn.artifacts.files import atomic_write_text

# --------------------------------------------------------------------------- HTML + Markdown builder

_CSS = """
:root{--fg:#1d232a;--muted:#5b6670;--line:#d8dee4;--accent:#1f77b4;--bg:#fff;--soft:#f5f7f9}
*{box-sizing:border-box}
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);
 max-width:1100px;margin:0 auto;padding:1rem 1.2rem 3rem}
h1{font-size:1.7rem;margin:.6rem 0 .2rem}h2{font-size:1.3rem;margin:2rem 0 .6rem;padding-top:.4rem;
 border-top:1px solid var(--line)}h3{font-size:1.05rem;margin:1.2rem 0 .4rem}
.sub{color:var(--muted);margin:0 0 1rem}
nav{font-size:.9rem;margin:.6rem 0 1rem;display:flex;flex-wrap:wrap;gap:.2rem 1rem}nav a{color:var(--accent)}
.verdict{border-left:5px solid var(--accent);background:var(--soft);padding:.7rem 1rem;margin:1rem 0;
 font-size:1.05rem}
.verdict.sig{border-color:#2ca02c}.verdict.nosig{border-color:#888}.verdict.warn{border-color:#ff7f0e}
.scroll{overflow-x:auto;margin:.5rem 0 1rem}
table{border-collapse:collapse;font-size:.92rem;min-width:50%}
th,td{border-bottom:1px solid var(--line);padding:.3rem .7rem;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}td.num{white-space:nowrap}
caption{caption-side:bottom;text-align:left;color:var(--muted);font-size:.85rem;padding-top:.3rem}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;display:block}
figcaption{color:var(--muted);font-size:.88rem;margin-top:.3rem}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(118px,1fr));gap:.6rem;margin:.6rem 0 1rem}
.card{margin:0;border:1px solid var(--line);border-radius:6px;padding:.4rem;background:var(--bg)}
.card img{width:100%;image-rendering:pixelated;border-radius:3px}
.card figcaption{font-size:.78rem;line-height:1.3;color:var(--fg)}
.card .bad{color:#d62728;font-weight:600}.card .ok{color:#2ca02c;font-weight:600}
pre{background:var(--soft);padding:.7rem;overflow:auto;font-size:.82rem;max-height:28rem}
code{font-size:.9em;background:var(--soft);padding:0 .2em;border-radius:3px}
footer{margin-top:2.5rem;color:var(--muted);font-size:.8rem}
@media (max-width:600px){body{font-size:15px;padding:.6rem}h1{font-size:1.35rem}
 .gallery{grid-template-columns:repeat(auto-fill,minmax(92px,1fr))}th,td{padding:.25rem .4rem}}
@media print{body{max-width:none;padding:0;font-size:11pt}nav{display:none}
 h2{break-after:avoid;border:none}figure,table,.card,.verdict{break-inside:avoid}
 pre{max-height:none;white-space:pre-wrap}*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 a{color:inherit;text-decoration:none}}
"""

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def inline_html(text: str) -> str:
    """Escape ``text`` and turn the two bits of Markdown we use, **bold** and `code`, into HTML."""
    import html

    return _CODE.sub(r"<code>\1</code>", _BOLD.sub(r"<strong>\1</strong>", html.escape(text)))


def png_data_uri(png: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def digit_png(image: np.ndarray, scale: int = 3) -> bytes:
    """A uint8 ``[28, 28]`` digit as a PNG, upscaled ``scale`` times (nearest neighbour)."""
    import io

    from PIL import Image

    img = Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L")
    buf = io.BytesIO()
    img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


_NUM = r"[-+−]?[\d,]*\.?\d+(e[-+]?\d+)?\s*(%|pp|s)?"
_NUMERIC = re.compile(rf"^{_NUM}(\s*(±|to)\s*{_NUM}|\s*\({_NUM}\))?$")


def _is_num(v: str) -> bool:
    """Cells like 1,234 / 98.76% / 0.12 pp / 97.1 ± 0.3 / -0.1 to 0.4 pp are right-aligned."""
    return bool(_NUMERIC.match(v.strip()))


class Report:
    """Collects sections once and renders them twice: self-contained HTML and Markdown.

    Text takes **bold** and `code` in both outputs. Figures are PNG files in the report's folder:
    embedded in the HTML, linked by relative name in the Markdown.
    """

    def __init__(self, title: str, subtitle: str = ""):
        self.title, self.subtitle = title, subtitle
        self.html: list[str] = []
        self.md: list[str] = []
        self.sections: list[tuple[str, str]] = []  # (anchor, heading) for the navigation bar

    def section(self, heading: str) -> Report:
        anchor = "s" + str(len(self.sections) + 1)
        self.sections.append((anchor, heading))
        self.html.append(f'<h2 id="{anchor}">{inline_html(heading)}</h2>')
        self.md += [f"## {heading}", ""]
        return self

    def heading(self, text: str) -> Report:
        self.html.append(f"<h3>{inline_html(text)}</h3>")
        self.md += [f"### {text}", ""]
        return self

    def text(self, text: str) -> Report:
        self.html.append(f"<p>{inline_html(text)}</p>")
        self.md += [text, ""]
        return self

    def verdict(self, text: str, kind: str = "") -> Report:
        """A highlighted conclusion; ``kind``: sig (green), nosig (grey), warn (orange)."""
        self.html.append(f'<div class="verdict {kind}">{inline_html(text)}</div>')
        self.md += ["> " + text, ""]
        return self

    def table(self, cols: list[str], rows: list[list[Any]], caption: str = "") -> Report:
        """A table; cells are shown with str(); numeric-looking columns are right-aligned."""
        cells = [[str(v) for v in r] for r in rows]
        num = [bool(cells) and all(_is_num(r[j]) or r[j] in ("", "–") for r in cells) for j in range(len(cols))]

        def cls(j: int) -> str:
            return ' class="num"' if num[j] else ""

        head = "".join(f"<th{cls(j)}>{inline_html(c)}</th>" for j, c in enumerate(cols))
        body = "".join(
            "<tr>" + "".join(f"<td{cls(j)}>{inline_html(v)}</td>" for j, v in enumerate(r)) + "</tr>" for r in cells
        )
        cap = f"<caption>{inline_html(caption)}</caption>" if caption else ""
        self.html.append(
            f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
        )
        self.md += ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" if n else "---" for n in num) + "|"]
        self.md += ["| " + " | ".join(v.replace("|", "\\|") for v in r) + " |" for r in cells]
        self.md += ["", f"*{caption}*", ""] if caption else [""]
        return self

    def figure(self, path: Path, caption: str) -> Report:
        """Embed the PNG at ``path`` (the Markdown links its file name)."""
        uri = png_data_uri(Path(path).read_bytes())
        alt = inline_html(caption).replace('"', "&quot;")
        self.html.append(
            f'<figure><img src="{uri}" alt="{alt}"><figcaption>{inline_html(caption)}</figcaption></figure>'
        )
        self.md += [f"![{caption}]({Path(path).name})", ""]
        return self

    def gallery(self, cards: list[tuple[bytes, str]], md_note: str = "") -> Report:
        """Image cards: (PNG bytes, caption HTML already escaped). Markdown gets ``md_note`` only."""
        items = "".join(
            f'<figure class="card"><img src="{png_data_uri(png)}" alt="digit"><figcaption>{cap}</figcaption></figure>'
            for png, cap in cards
        )
        self.html.append(f'<div class="gallery">{items}</div>')
        if md_note:
            self.md += [md_note, ""]
        return self

    def pre(self, text: str, lang: str = "") -> Report:
        import html

        self.html.append(f"<pre>{html.escape(text)}</pre>")
        self.md += [f"```{lang}", text.rstrip("\n"), "```", ""]
        return self

    def render_html(self) -> str:
        import html
        import time

        nav = " ".join(f'<a href="#{a}">{inline_html(h)}</a>' for a, h in self.sections)
        sub = f'<p class="sub">{inline_html(self.subtitle)}</p>' if self.subtitle else ""
        stamp = time.strftime("%Y-%m-%d %H:%M")
        return (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            # no scripts, no network: forbid any fetch so a report can never phone home
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
            "style-src 'unsafe-inline'\">"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{inline_html(self.title)}</h1>{sub}<nav>{nav}</nav>{''.join(self.html)}"
            f"<footer>Generated by mnist-cnn on {stamp}.</footer></body></html>\n"
        )

    def render_md(self) -> str:
        head = [f"# {self.title}", ""] + ([self.subtitle, ""] if self.subtitle else [])
        return "\n".join(head + self.md).rstrip("\n") + "\n"

    def write(self, out: Path, html_name: str = "report.html", md_name: str | None = "summary.md") -> Path:
        """Write ``out/html_name`` (and ``out/md_name`` unless None); returns the HTML path."""
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / html_name, self.render_html())
        if md_name:
            atomic_write_text(out / md_name, self.render_md())
        return out / html_name


def pct(x: float | None, digits: int = 2) -> str:
    """0.9876 -> '98.76%'; None or NaN -> '–'."""
    return "–" if x is None or np.isnan(x) else f"{100 * x:.{digits}f}%"


def fmt(x: float | None, digits: int = 4) -> str:
    return "–" if x is None or np.isnan(x) else f"{x:.{digits}f}"
