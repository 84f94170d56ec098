"""The playground page (`GET /playground`, development mode only) in a real Chromium.

Each player is a page in a browser context of its own, on the real server in development mode;
the page's script speaks Socket.IO over a WebSocket by itself. The page's state is read through
its read-only ``window.playground`` view, and what it draws is checked on the canvas itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, expect

from support.ids import space_id
from support.server import ServerProcess

# The first test of a fresh machine installs Chromium (apt-get) while it sets up; once it is
# there, each test takes about ten seconds.
pytestmark = pytest.mark.timeout(300)

WAIT_MS = 10_000
HOSTILE = "<img src=x onerror=alert(1)>"
"""Only a tag: the server refuses it as a nickname (no visible text left)."""
HOSTILE_KEPT = "<img src=x onerror=alert(1)//"
"""An unclosed tag: kept by the server (escaped), so the page must show it as plain text."""


@dataclass
class Player:
    page: Page
    problems: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def state(self, name: str) -> Any:
        return self.page.evaluate(f"() => window.playground.{name}")

    def find(self, nickname: str) -> dict[str, Any]:
        found = [p for p in self.state("players") if p["nickname"] == nickname]
        assert len(found) == 1, (nickname, self.state("players"))
        return found[0]

    def chat_line(self, text: str) -> Any:
        return self.page.locator("#chat li").filter(has_text=re.compile(f"^{re.escape(text)}$"))


class Players:
    """Opens playground pages, each in a browser context of its own, and watches them."""

    def __init__(self, browser: Browser, server: ServerProcess) -> None:
        self.browser = browser
        self.server = server
        self.opened: list[Player] = []

    def open(self, joined: bool = True, **query: str) -> Player:
        context = self.browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        player = Player(page)

        def console(message: ConsoleMessage) -> None:
            if message.type == "error":  # a refused script, style or connection (CSP) too
                player.problems.append(f"console error: {message.text}")

        def dialog(opened: Dialog) -> None:
            player.dialogs.append(opened.message)
            opened.dismiss()

        page.on("console", console)
        page.on("pageerror", lambda error: player.problems.append(f"page error: {error}"))
        page.on("dialog", dialog)
        self.opened.append(player)
        response = page.goto(f"{self.server.url}/playground?{urlencode(query)}")
        assert response is not None and response.status == 200
        if joined:
            page.wait_for_function("() => window.playground.joined", timeout=WAIT_MS)
        return player

    def close(self) -> None:
        for player in self.opened:
            player.page.context.close()


@pytest.fixture
def players(browser: Browser, dev_server: ServerProcess) -> Iterator[Players]:
    opened = Players(browser, dev_server)
    yield opened
    opened.close()


def wait_for(player: Player, script: str, arg: Any = None) -> None:
    player.page.wait_for_function(script, arg=arg, timeout=WAIT_MS)


def pixels_of(player: Player, color: str, box: tuple[float, float, float, float]) -> int:
    """How many canvas pixels inside ``box`` (left, top, width, height) have the avatar colour
    ``color`` (a name of the page's palette), as drawn."""
    return int(
        player.page.evaluate(
            """([name, [left, top, width, height]]) => {
                const hex = window.playground.colors[name];
                const want = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
                const canvas = document.getElementById("space");
                const data = canvas.getContext("2d").getImageData(
                    Math.round(left), Math.round(top), Math.round(width), Math.round(height)).data;
                let count = 0;
                for (let i = 0; i < data.length; i += 4) {
                    if (want.every((v, k) => Math.abs(data[i + k] - v) <= 2)) count += 1;
                }
                return count;
            }""",
            [color, list(box)],
        )
    )


def assert_clean(*everyone: Player) -> None:
    for player in everyone:
        assert player.problems == [], player.problems
        assert player.dialogs == [], player.dialogs


def test_two_players_see_each_other_move_chat_and_whisper(
    players: Players, artifacts: Path
) -> None:
    """Ann walks right with the arrow key: Bob's page has her at the new place and draws her
    there. A chat line sent on Bob's page appears in Ann's list; a whisper shows on its target
    only; zones and proximity travel too; the pages log no errors (CSP included)."""
    space = space_id()
    ann = players.open(space=space, nickname="Ann", color="red", role="STAFF")
    bob = players.open(space=space, nickname="Bob", color="blue")
    cid = players.open(space=space, nickname="Cid", color="green")
    for player in (ann, bob, cid):
        wait_for(player, "() => window.playground.players.length === 3")
    start = bob.find("Ann")
    assert (start["x"], start["y"], start["isMoving"]) == (480, 320, False), start
    radius = ann.state("radius")
    # The stripe right of Ann's spawn, where she is about to walk, holds no red pixel yet.
    stripe = (start["x"] + 2 * radius, start["y"] - radius, 300, 2 * radius)
    assert pixels_of(bob, "red", stripe) == 0
    before = bob.page.locator("#space").screenshot()

    ann.page.locator("#space").click()
    ann.page.keyboard.down("ArrowRight")
    ann.page.wait_for_timeout(600)
    ann.page.keyboard.up("ArrowRight")

    wait_for(
        bob,
        """([id, x]) => window.playground.players.some(
            (p) => p.id === id && p.x > x + 40 && !p.isMoving)""",
        [start["id"], start["x"]],
    )
    own = ann.find("Ann")
    wait_for(
        bob,
        "([id, x]) => window.playground.players.some((p) => p.id === id && p.x === x)",
        [own["id"], own["x"]],
    )
    seen = bob.find("Ann")
    assert (seen["y"], seen["direction"], seen["isMoving"]) == (320, "right", False), seen
    bob.page.wait_for_timeout(200)  # a frame or two after the last move
    avatar = (seen["x"] - radius / 2, seen["y"] - radius / 2, radius, radius)
    assert pixels_of(bob, "red", avatar) > radius * radius / 2, "Ann is not drawn at her place"
    assert pixels_of(bob, "red", stripe) > radius * radius
    assert bob.page.locator("#space").screenshot() != before
    ann.page.keyboard.press("Space")  # a jump: relayed and drawn without errors

    # Chat: typed on Bob's page, shown on Ann's (the server's escapes undone for display).
    bob.page.locator("#text").fill('hello 1 < 2 & "3"')
    bob.page.locator("#text").press("Enter")
    expect(ann.chat_line('Bob: hello 1 < 2 & "3"')).to_have_count(1)
    expect(bob.chat_line('Bob: hello 1 < 2 & "3"')).to_have_count(1)

    # Whispers: "/w nickname text" on Ann's page, the "to" selector on Bob's.
    ann.page.locator("#text").fill("/w Bob psst, only for you")
    ann.page.locator("#text").press("Enter")
    expect(bob.chat_line("Ann → you: psst, only for you")).to_have_count(1)
    expect(ann.chat_line("you → Bob: psst, only for you")).to_have_count(1)
    bob.page.locator("#to").select_option(label="whisper to Ann")
    bob.page.locator("#text").fill("a secret reply")
    bob.page.locator("#text").press("Enter")
    expect(ann.chat_line("Bob → you: a secret reply")).to_have_count(1)
    bob.page.locator("#to").select_option(value="")
    bob.page.locator("#text").fill("and this is for everyone")
    bob.page.locator("#text").press("Enter")
    expect(cid.chat_line("Bob: and this is for everyone")).to_have_count(1)
    # Cid got the line sent after both whispers, on the same connection: none reached him.
    cid_lines = cid.page.locator("#chat li").all_text_contents()
    assert not [text for text in cid_lines if "psst" in text or "secret" in text], cid_lines

    # Party zones: Ann and Bob in Zone A see each other as members; Bob leaves again.
    ann.page.get_by_role("button", name="Join Zone A").click()
    bob.page.get_by_role("button", name="Join Zone A").click()
    expect(ann.page.locator("#zone-members li")).to_have_text(["Ann", "Bob"])
    expect(bob.page.locator("#zone-status")).to_have_text("In Zone A:")
    assert sorted(ann.state("zone")["members"]) == sorted([start["id"], bob.state("myId")])
    bob.page.get_by_role("button", name="Leave zone").click()
    expect(ann.page.locator("#zone-members li")).to_have_text(["Ann"])
    expect(bob.page.locator("#zone-status")).to_have_text("Not in a zone.")

    # Proximity: Ann (STAFF) switches it on for everyone; Bob (PARTICIPANT) may not switch it.
    # (the box shows the space's state: it turns on when the server confirms the change)
    ann.page.locator("#proximity").click()
    expect(ann.page.locator("#proximity")).to_be_checked()
    expect(bob.page.locator("#proximity")).to_be_checked()
    expect(cid.page.locator("#proximity")).to_be_checked()
    bob.page.locator("#proximity").click()
    expect(bob.page.locator("#chat li.error")).to_have_count(1)
    expect(bob.page.locator("#proximity")).to_be_checked()
    assert ann.state("proximity") is True

    ann.page.screenshot(path=str(artifacts / "playground-ann.png"), full_page=True)
    bob.page.screenshot(path=str(artifacts / "playground-bob.png"), full_page=True)
    assert_clean(ann, bob, cid)


def test_hostile_nicknames_are_plain_text(players: Players, artifacts: Path) -> None:
    """A nickname that is HTML is never parsed as HTML: no dialog opens and no element appears,
    whether the server refuses it or keeps it (then it reads as typed)."""
    space = space_id()
    ann = players.open(space=space, nickname="Ann")
    refused = players.open(joined=False, space=space, nickname=HOSTILE)
    expect(refused.page.locator("#chat li.error")).to_have_count(1)
    assert refused.state("joined") is False
    expect(refused.page.locator("#who")).to_have_text("")

    kept = players.open(space=space, nickname=HOSTILE_KEPT)
    wait_for(ann, "() => window.playground.players.length === 2")
    expect(ann.page.locator("#to option").nth(1)).to_have_text(f"whisper to {HOSTILE_KEPT}")
    expect(kept.page.locator("#who")).to_have_text(f"you are {HOSTILE_KEPT} (PARTICIPANT)")
    expect(ann.page.locator("#chat li.system").last).to_contain_text(HOSTILE_KEPT)
    kept.page.locator("#text").fill(f"hi {HOSTILE}<svg onload=alert(2)>there")
    kept.page.locator("#text").press("Enter")
    expect(ann.chat_line(f"{HOSTILE_KEPT}: hi there")).to_have_count(1)
    ann.page.wait_for_timeout(300)
    for player in (ann, refused, kept):
        assert player.page.locator("img, svg, [onerror], [onload]").count() == 0
    kept.page.screenshot(path=str(artifacts / "playground-hostile-nickname.png"), full_page=True)
    assert_clean(ann, refused, kept)


def test_page_headers(dev_server: ServerProcess) -> None:
    """The page is HTML that is never cached, under a policy that allows only its own inline
    script and style (by hash) and connections to this server."""
    response = httpx.get(f"{dev_server.url}/playground", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    policy = dict(
        part.strip().split(" ", 1)
        for part in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]+={0,2}'", policy["script-src"]), policy
    assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]+={0,2}'", policy["style-src"]), policy
    assert policy["connect-src"] == "'self' ws: wss:"
    assert "<script src" not in response.text and '<link rel="stylesheet"' not in response.text


def test_not_served_in_production(prod_server: ServerProcess) -> None:
    """Outside development mode there is no playground: 404 like any unknown path."""
    response = httpx.get(f"{prod_server.url}/playground", timeout=5)
    assert response.status_code == 404
    assert response.json() == {"error": "Not found"}
    assert "content-security-policy" not in response.headers


def test_only_own_origin_added_in_development(dev_server: ServerProcess) -> None:
    """The page's own origin may open Socket.IO sessions in development mode (the playground
    needs it); any other origin that is not listed is still refused."""
    host = f"{dev_server.host}:{dev_server.port}"
    for origin, status in (
        (f"http://{host}", 200),
        ("http://evil.example", 403),
        (f"http://{host}.evil.example", 403),
        (f"http://evil.example/{host}", 403),
    ):
        response = httpx.get(
            f"{dev_server.url}/socket.io/",
            params={"EIO": "4", "transport": "polling"},
            headers={"Origin": origin},
            timeout=5,
        )
        assert response.status_code == status, (origin, response.status_code, response.text)
        assert ('"sid"' in response.text) == (status == 200), origin
