"""The single-node state store (SPEC §2.3, §3, §4, §6)."""

from __future__ import annotations

import pytest

from spacesync.domain.identity import Identity
from spacesync.domain.limits import INVITE_TARGET, JOIN_PLAYER
from spacesync.domain.parties import Member, PartyError
from spacesync.state.memory import MemoryStore

T0 = 1_700_000_000.0


def ident(player_id: str, nickname: str | None = None, avatar_color: str = "default") -> Identity:
    return Identity(player_id, nickname or player_id.capitalize(), avatar_color=avatar_color)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


# -- joining and leaving ------------------------------------------------------------------------


async def test_new_players_spawn_at_480_320_facing_down(store: MemoryStore) -> None:
    """SPEC §3: new players spawn at x = 480, y = 320, facing down, not moving."""
    result = await store.join("space-1", ident("ann"), "sid-1", T0)
    player = result.player
    assert (player.x, player.y, player.direction, player.is_moving) == (480, 320, "down", False)
    assert result.replaced_sid is None


async def test_the_roster_includes_the_joiner(store: MemoryStore) -> None:
    """SPEC §5 room:joined: players includes the joiner."""
    await store.join("space-1", ident("ann"), "sid-1", T0)
    result = await store.join("space-1", ident("bob"), "sid-2", T0 + 1)
    assert sorted(p.id for p in result.roster) == ["ann", "bob"]


async def test_spaces_are_separate(store: MemoryStore) -> None:
    """SPEC §4: players see only their own space."""
    await store.join("space-1", ident("ann"), "sid-1", T0)
    await store.join("space-2", ident("bob"), "sid-2", T0)
    assert [p.id for p in await store.players("space-1")] == ["ann"]
    assert [p.id for p in await store.players("space-2")] == ["bob"]
    assert await store.space_sizes() == {"space-1": 1, "space-2": 1}


async def test_leaving_removes_the_player(store: MemoryStore) -> None:
    """SPEC §4 leave:space: the player is no longer in the space."""
    await store.join("space-1", ident("ann"), "sid-1", T0)
    await store.join("space-1", ident("bob"), "sid-2", T0)
    left = await store.leave("space-1", "ann", "sid-1")
    assert left is not None and left.id == "ann"
    assert [p.id for p in await store.players("space-1")] == ["bob"]
    assert await store.player("space-1", "ann") is None


async def test_leaving_twice_is_harmless(store: MemoryStore) -> None:
    """SPEC §4 leave:space: a later disconnect of the same socket sends nothing again."""
    await store.join("space-1", ident("ann"), "sid-1", T0)
    assert await store.leave("space-1", "ann", "sid-1") is not None
    assert await store.leave("space-1", "ann", "sid-1") is None
    assert await store.leave("space-unknown", "ann", "sid-1") is None


async def test_an_empty_space_disappears(store: MemoryStore) -> None:
    """SPEC §10: `/metrics` rooms list only spaces with players."""
    await store.join("space-1", ident("ann"), "sid-1", T0)
    await store.leave("space-1", "ann", "sid-1")
    assert await store.space_sizes() == {}
    assert await store.players("space-1") == []


# -- one live socket per player ------------------------------------------------------------------


async def test_a_second_socket_replaces_the_first(store: MemoryStore) -> None:
    """SPEC §2.3: the same playerId joining again replaces the older socket."""
    await store.join("space-1", ident("ann"), "sid-old", T0)
    result = await store.join("space-1", ident("ann"), "sid-new", T0 + 10)
    assert result.replaced_sid == "sid-old"
    assert result.player.sid == "sid-new"
    assert [p.id for p in result.roster] == ["ann"], "no duplicate entry for the player"


async def test_the_new_socket_inherits_position_and_direction(store: MemoryStore) -> None:
    """SPEC §2.3: the new socket inherits the old position and direction."""
    await store.join("space-1", ident("ann"), "sid-old", T0)
    store.move("space-1", "ann", 100.5, -42, "left", False)
    result = await store.join("space-1", ident("ann"), "sid-new", T0 + 10)
    assert (result.player.x, result.player.y, result.player.direction) == (100.5, -42, "left")


async def test_the_new_socket_starts_its_own_stay(store: MemoryStore) -> None:
    """SPEC §7: durationSeconds is the time since *this socket's* join."""
    await store.join("space-1", ident("ann"), "sid-old", T0)
    result = await store.join("space-1", ident("ann"), "sid-new", T0 + 30)
    assert result.player.joined_at == T0 + 30


async def test_the_old_socket_leaving_does_not_remove_the_new_one(store: MemoryStore) -> None:
    """SPEC §2.3: the replaced socket's disconnect does not make the player leave."""
    await store.join("space-1", ident("ann"), "sid-old", T0)
    await store.join("space-1", ident("ann"), "sid-new", T0 + 1)
    assert await store.leave("space-1", "ann", "sid-old") is None
    player = await store.player("space-1", "ann")
    assert player is not None and player.sid == "sid-new"


async def test_rejoining_on_the_same_socket_replaces_nothing(store: MemoryStore) -> None:
    """SPEC §2.3: only another socket is a duplicate session."""
    await store.join("space-1", ident("ann"), "sid-1", T0)
    result = await store.join("space-1", ident("ann", "Annie"), "sid-1", T0 + 1)
    assert result.replaced_sid is None
    assert result.player.identity.nickname == "Annie"


async def test_the_replacing_identity_is_the_new_one(store: MemoryStore) -> None:
    """SPEC §2: every event uses the identity bound to the (new) socket."""
    await store.join("space-1", ident("ann", "Ann"), "sid-old", T0)
    result = await store.join("space-1", ident("ann", "Ann (tablet)"), "sid-new", T0 + 1)
    assert result.player.identity.nickname == "Ann (tablet)"


# -- movement and profile -----------------------------------------------------------------------


async def test_moves_update_the_stored_position(store: MemoryStore) -> None:
    """SPEC §4 player:move: updates the stored position; player:moved has no avatar fields."""
    await store.join("space-1", ident("ann", avatar_color="red"), "sid-1", T0)
    moved = store.move("space-1", "ann", 10, 20, "up", True)
    assert moved is not None
    assert moved.moved() == {
        "id": "ann",
        "nickname": "Ann",
        "x": 10,
        "y": 20,
        "direction": "up",
        "isMoving": True,
    }
    stored = await store.player("space-1", "ann")
    assert stored is not None and (stored.x, stored.y, stored.is_moving) == (10, 20, True)


async def test_moves_of_absent_players_are_dropped(store: MemoryStore) -> None:
    """SPEC §4: events sent before joining change nothing."""
    assert store.move("space-1", "ghost", 1, 1, "up", True) is None
    assert await store.players("space-1") == []


async def test_profile_updates_are_stored(store: MemoryStore) -> None:
    """SPEC §4 player:updateProfile: the identity's display fields change."""
    await store.join("space-1", ident("ann"), "sid-1", T0)
    await store.update_identity("space-1", ident("ann", "Annie", avatar_color="blue"))
    player = await store.player("space-1", "ann")
    assert player is not None
    assert player.position()["nickname"] == "Annie"
    assert player.position()["avatarColor"] == "blue"
    assert await store.update_identity("space-1", ident("ghost")) is None


# -- whisper targets by nickname ----------------------------------------------------------------


async def test_nickname_lookup_ignores_case_and_spaces(store: MemoryStore) -> None:
    """SPEC §4 whisper:send: a target may be named by nickname."""
    await store.join("space-1", ident("ann", "Ann"), "sid-1", T0)
    await store.join("space-1", ident("bob", "Bob"), "sid-2", T0)
    found = await store.players_named("space-1", "  aNN ")
    assert [p.id for p in found] == ["ann"]
    assert await store.players_named("space-1", "Cat") == []


async def test_shared_nicknames_are_all_found(store: MemoryStore) -> None:
    """SPEC §4 whisper:send: a nickname shared by several players is an error (all are seen)."""
    await store.join("space-1", ident("ann-1", "Ann"), "sid-1", T0)
    await store.join("space-1", ident("ann-2", "ANN"), "sid-2", T0)
    await store.join("space-2", ident("ann-3", "Ann"), "sid-3", T0)
    assert sorted(p.id for p in await store.players_named("space-1", "ann")) == ["ann-1", "ann-2"]


# -- proximity ----------------------------------------------------------------------------------


async def test_proximity_is_off_until_set(store: MemoryStore) -> None:
    """SPEC §4 proximity:set: stores the space flag (off by default)."""
    assert await store.proximity("space-1") is False
    await store.set_proximity("space-1", True)
    assert await store.proximity("space-1") is True
    assert await store.proximity("space-2") is False
    await store.set_proximity("space-1", False)
    assert await store.proximity("space-1") is False


# -- parties ------------------------------------------------------------------------------------


async def test_parties_are_kept_per_space(store: MemoryStore) -> None:
    """SPEC §4: parties live inside the current space; party counts feed /metrics."""
    await store.join("space-1", ident("ann"), "sid-1", T0)
    async with store.parties("space-1") as parties:
        party_id = parties.create(Member("ann", "Ann"), "Raid").party.id
    async with store.parties("space-2") as parties:
        assert parties.get(party_id) is None
    async with store.parties("space-1") as parties:
        assert parties.get(party_id) is not None
    assert await store.party_count() == 1


async def test_party_count_follows_deletions(store: MemoryStore) -> None:
    """SPEC §10: `parties.count` is the number of live parties."""
    async with store.parties("space-1") as parties:
        parties.join_zone(Member("ann", "Ann"), "zone-1", "Zone")
        parties.join_zone(Member("bob", "Bob"), "zone-2", "Zone 2")
    assert await store.party_count() == 2
    async with store.parties("space-1") as parties:
        parties.leave_all("ann")
    assert await store.party_count() == 1


async def test_housekeeping_expires_invitations(store: MemoryStore) -> None:
    """SPEC §4 party:invite: invitations expire after 5 minutes."""
    await store.join("space-1", ident("ann"), "sid-1", T0)
    await store.join("space-1", ident("bob"), "sid-2", T0)
    async with store.parties("space-1") as parties:
        party_id = parties.create(Member("ann", "Ann"), "Raid").party.id
        parties.invite("ann", party_id, "bob", T0)
    await store.housekeeping(T0 + 301)
    async with store.parties("space-1") as parties:
        with pytest.raises(PartyError):
            parties.decline("bob", party_id, T0 + 301)


# -- chat allowance -----------------------------------------------------------------------------


async def test_chat_allowance_is_per_player_not_per_socket(store: MemoryStore) -> None:
    """SPEC §6: rate limit per player (a second tab does not double it)."""
    await store.join("space-1", ident("ann"), "sid-1", T0)
    for i in range(5):
        assert (await store.allow_chat("ann", f"m{i}", T0)).allowed
    await store.join("space-1", ident("ann"), "sid-2", T0 + 1)
    decision = await store.allow_chat("ann", "from the other tab", T0 + 1)
    assert decision.allowed is False
    assert decision.retry_after >= 1
    assert (await store.allow_chat("bob", "hi", T0 + 1)).allowed


async def test_housekeeping_keeps_the_limit_fair(store: MemoryStore) -> None:
    """SPEC §6: housekeeping never resets a limit that is still running."""
    for i in range(5):
        await store.allow_chat("ann", f"m{i}", T0)
    await store.housekeeping(T0 + 1)
    assert not (await store.allow_chat("ann", "still limited", T0 + 2)).allowed


async def test_per_player_limits_are_checked_and_counted_in_one_call(
    store: MemoryStore,
) -> None:
    """SPEC §8: joins per player, whatever socket they come from; other players and other
    rules have their own allowance."""
    hits = [await store.hit_limit(JOIN_PLAYER, "ann", 1.0) for _ in range(JOIN_PLAYER.limit)]
    assert all(h.allowed for h in hits) and hits[-1].count == JOIN_PLAYER.limit
    refused = await store.hit_limit(JOIN_PLAYER, "ann", 2.0)
    assert not refused.allowed and refused.retry_after == 58
    assert (await store.hit_limit(JOIN_PLAYER, "bob", 2.0)).allowed
    assert (await store.hit_limit(INVITE_TARGET, "ann", 2.0)).allowed
    assert (await store.hit_limit(JOIN_PLAYER, "ann", 60.0)).allowed  # the next window


async def test_a_given_back_event_frees_its_allowance(store: MemoryStore) -> None:
    """An event refused by its handler (a malformed payload) does not use the allowance."""
    hits = [await store.hit_limit(JOIN_PLAYER, "ann", 1.0) for _ in range(JOIN_PLAYER.limit)]
    await store.give_back(hits[-1])
    assert (await store.hit_limit(JOIN_PLAYER, "ann", 1.0)).allowed
    refused = await store.hit_limit(JOIN_PLAYER, "ann", 1.0)
    await store.give_back(refused)  # nothing was counted for a refusal
    assert not refused.allowed
    assert not (await store.hit_limit(JOIN_PLAYER, "ann", 1.0)).allowed


async def test_a_single_node_store_is_ready(store: MemoryStore) -> None:
    """SPEC §10: /health/ready is 200 when the node can serve (no Redis needed)."""
    assert await store.ready() is True
    await store.close()
