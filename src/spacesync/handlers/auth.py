"""Who a socket is: the session token at connect (SPEC §2.2) and at the join (SPEC §2.1).

The app is asked whether a session is valid *for a space* (through the :class:`VerifyGuard`);
logged-in users' tokens may be checked here instead (:class:`~.identity.Access`), which also
gives the role in the space. In development, a join without a usable token gets the identity
the client names; in production it is refused.
"""

from __future__ import annotations

from typing import Any

from .. import protocol
from ..config import Settings
from ..domain.identity import Identity, anonymous_player_id, token_user_id
from ..integrations.app_api import VerifyStatus
from ..integrations.verify_guard import VerifyGuard
from ..observability.abuse import AbuseCounters
from ..observability.logging import log
from ..protocol import BadInput
from ..texts import TextError
from .dispatch import connect_refused
from .identity import Access, LoginRefused
from .session import PreVerified, Session


class AuthRefused(TextError):
    """The session cannot be accepted (production); its text and code go to the client."""

    def __init__(self, key: str, code: str) -> None:
        super().__init__(key)
        self.code = code


class Authenticator:
    """Connect-time verification and the identity of each join."""

    def __init__(
        self,
        *,
        settings: Settings,
        access: Access,
        verifier: VerifyGuard,
        abuse: AbuseCounters,
    ) -> None:
        self.settings = settings
        self.access = access
        self.verifier = verifier
        self.abuse = abuse

    async def verify_at_connect(self, session: Session, auth: dict[str, Any]) -> None:
        """Connect-time authentication (SPEC §2.2), bound to the space it was verified for.

        The app is asked whether a session is valid *for a space*, so its answer counts only
        there. The token is verified here only when ``auth.spaceId`` is a usable space id; a later
        join of that space uses the identity without a second call. A join of another space, and
        every join after a connect that named no usable space (missing, null, numeric,
        malformed), verifies the token at the join for the join's space: an identity verified
        for ``{spaceId: null}`` would otherwise open every space. The token is kept for a join
        that sends none. The join's token rule applies (:func:`protocol.parse_session_token`):
        a token the join would refuse is never sent to the app from here either.
        """
        ctx = {"socketId": session.sid, "address": session.address}
        try:
            token = protocol.parse_session_token(auth.get("sessionToken"))
        except BadInput as exc:
            self.abuse.count("sessionTokenTooLong")
            log.warn("E1002", f"Session token refused at connect: {exc}", **ctx)
            raise connect_refused(protocol.CONNECT_INVALID_SESSION) from None
        if token is None:
            return
        session.connect_token = token
        space_id = auth.get("spaceId")
        if not isinstance(space_id, str) or not protocol.ID_RE.fullmatch(space_id):
            return  # verified at the join, for the join's space
        if self.settings.development and token.startswith("dev-"):
            return  # development tokens are resolved from the join payload
        if self.access.checks_locally(token):
            # Checked here so a forged token fails the connection; resolved at the join, which
            # brings the nickname and avatar a logged-in user chose.
            try:
                self.access.logged_in_user(token)
            except LoginRefused as exc:
                log.warn("E1002", f"Session verification failed: {exc}", spaceId=space_id, **ctx)
                if not self.settings.development:
                    raise connect_refused(protocol.CONNECT_INVALID_SESSION) from None
            return
        result = await self.verifier.verify(
            token, space_id, session.address, self._verify_url(token)
        )
        if result.verification is not None:
            v = result.verification
            identity = Identity(
                player_id=v.participant_id,
                nickname=v.nickname or "",
                avatar_color=v.avatar_color,
                avatar_config=v.avatar_config,
                role=v.role,
                session_token=token,
                user_id=v.user_id or token_user_id(token),
                verified=True,
            )
            app_role = v.role if v.role_given else None
            session.pre_verified = PreVerified(token, space_id, identity, app_role)
            return
        self._log_verification_failure(result.status, result.detail, spaceId=space_id, **ctx)
        if not self.settings.development:
            raise connect_refused(protocol.CONNECT_INVALID_SESSION)

    def _log_verification_failure(self, status: VerifyStatus, detail: str, **ctx: Any) -> None:
        if status is VerifyStatus.INVALID:
            log.warn("E1002", f"Session verification failed: {detail}", **ctx)
        elif status is VerifyStatus.TIMEOUT:
            log.error("E4003", f"Session verification timed out: {detail}", **ctx)
        else:
            log.error("E4002", f"Session verification API unreachable: {detail}", **ctx)

    async def resolve(self, session: Session, join: protocol.JoinSpace) -> Identity:
        """Decide who is joining (SPEC §2.1); raises :class:`AuthRefused` in production."""
        dev = self.settings.development
        token = join.session_token
        pre = session.pre_verified
        if pre is not None and token in (None, pre.token) and pre.space_id == join.space_id:
            identity = pre.identity
            if not identity.nickname:
                if join.nickname is None:
                    raise BadInput("error.nickname.required")
                identity = identity.with_profile(join.nickname, None, None)
            return await self.access.complete(
                identity, join.space_id, app_role=pre.app_role, **session.context()
            )
        if token is None:
            token = session.connect_token  # verified below, for this join's space

        def client_identity(player_id: str | None, role: str | None) -> Identity:
            if join.nickname is None:
                raise BadInput("error.nickname.required")
            return Identity(
                player_id=player_id or anonymous_player_id(),
                nickname=join.nickname,
                avatar_color=join.avatar_color,
                avatar_config=join.avatar_config,
                role=role or "PARTICIPANT",
                session_token=token,
                user_id=token_user_id(token),
                verified=False,
            )

        ctx = session.context() | {"spaceId": join.space_id}
        if not token:
            if not dev:
                log.warn("E1001", "Session token required", **ctx)
                raise AuthRefused("error.session.required", "SESSION_REQUIRED")
            log.warn("E1001", "Joining without a session token (development)", **ctx)
            return client_identity(None, join.role)
        if dev and token.startswith("dev-"):
            return client_identity(join.player_id, join.role)
        if self.access.checks_locally(token):
            try:
                user_id = self.access.logged_in_user(token)
                if await self.access.unknown_user(user_id, **ctx):
                    raise LoginRefused("no such user in the database")
            except LoginRefused as exc:
                log.warn("E1002", f"Session verification failed: {exc}", **ctx)
                if not dev:
                    raise AuthRefused("error.session.invalid", "INVALID_SESSION") from None
                return client_identity(join.player_id, join.role)
            if join.nickname is None:
                raise BadInput("error.nickname.required")
            # As the original: the player id is the user's, the name and avatar the ones the
            # user chose on the page (the client's join).
            user = Identity(
                player_id=f"user-{user_id}",
                nickname=join.nickname,
                avatar_color=join.avatar_color,
                avatar_config=join.avatar_config,
                session_token=token,
                user_id=user_id,
                verified=True,
            )
            return await self.access.complete(user, join.space_id, app_role=None, **ctx)
        result = await self.verifier.verify(
            token, join.space_id, session.address, self._verify_url(token)
        )
        verification = result.verification
        if verification is None:
            self._log_verification_failure(
                result.status, result.detail, address=session.address, **ctx
            )
            if not dev:
                raise AuthRefused("error.session.invalid", "INVALID_SESSION")
            return client_identity(join.player_id, join.role)
        nickname = verification.nickname or join.nickname
        if nickname is None:
            raise BadInput("error.nickname.required")
        app_gave_avatar = verification.avatar_given
        verified = Identity(
            player_id=verification.participant_id,
            nickname=nickname,
            avatar_color=verification.avatar_color if app_gave_avatar else join.avatar_color,
            avatar_config=verification.avatar_config if app_gave_avatar else join.avatar_config,
            role=verification.role,
            session_token=token,
            user_id=verification.user_id or token_user_id(token),
            verified=True,
        )
        app_role = verification.role if verification.role_given else None
        return await self.access.complete(verified, join.space_id, app_role=app_role, **ctx)

    def _verify_url(self, token: str) -> str | None:
        """``AUTH_VERIFY_URL`` for a logged-in user's token, the guest route for the rest."""
        return self.access.verify_url if token.startswith("auth-") else None
