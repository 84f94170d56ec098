"""Korean texts, key for key and parameter for parameter the same as :mod:`.en`.

Names are followed by 님 rather than a particle, so that no sentence depends on whether a
nickname ends in a consonant. Wire names (``direction``, ``avatarConfig.type``...) stay as they
are in the texts about malformed payloads, since only a broken client ever sees those.
"""

from __future__ import annotations

_RETRY = " {seconds:seconds} 후에 다시 시도해 주세요."

TEXTS: dict[str, str] = {
    # -- sender of system messages ----------------------------------------------------------
    "sender.system": "시스템",
    # -- chat:system notices ---------------------------------------------------------------
    "notice.joined": "{nickname}님이 들어왔습니다.",
    "notice.left": "{nickname}님이 나갔습니다.",
    "notice.disconnected": "{nickname}님의 연결이 끊겼습니다.",
    "notice.proximity_on": (
        "{nickname}님이 근접 음성·영상을 켰습니다. "
        "이제 가까이 있는 사람끼리만 보고 들을 수 있습니다."
    ),
    "notice.proximity_off": (
        "{nickname}님이 근접 음성·영상을 껐습니다. "
        "이제 공간에 있는 모든 사람과 보고 들을 수 있습니다."
    ),
    "notice.restarting": "서버를 다시 시작합니다. 잠시 후 자동으로 다시 연결됩니다.",
    "notice.muted": "{moderator}님이 {nickname}님을 음소거했습니다.",
    "notice.muted_for": "{moderator}님이 {nickname}님을 {minutes:minutes} 동안 음소거했습니다.",
    "notice.unmuted": "{moderator}님이 {nickname}님의 음소거를 해제했습니다.",
    "notice.mute_ended": "{nickname}님의 음소거가 끝났습니다.",
    "notice.kicked": "{moderator}님이 {nickname}님을 공간에서 내보냈습니다.",
    "notice.banned": "{moderator}님이 {nickname}님을 이 공간에서 차단했습니다.",
    "notice.with_reason": "{notice} (사유: {reason})",
    "notice.unbanned": "{moderator}님이 {nickname}님의 차단을 해제했습니다.",
    # -- session, connection and joining (the bare `error` event) ----------------------------
    "error.session.invalid": "세션이 유효하지 않습니다. 페이지를 새로고침한 뒤 다시 입장해 주세요.",
    "error.session.required": "세션 정보가 없습니다. 공간에 다시 입장해 주세요.",
    "error.session.duplicate": "다른 기기나 탭에서 입장하여 이 화면의 연결을 닫았습니다.",
    "error.connect.shutting_down": "서버가 종료되는 중입니다. 잠시 후 다시 연결해 주세요.",
    "error.join.failed": "공간에 입장하지 못했습니다. 잠시 후 다시 시도해 주세요.",
    "error.join.banned": "이 공간에서 차단되어 입장할 수 없습니다.",
    "error.kicked": "이 공간에서 강제 퇴장되었습니다.",
    "error.kicked.banned": "이 공간에서 차단되었습니다. 다시 입장할 수 없습니다.",
    "error.not_joined": "먼저 공간에 입장해 주세요.",
    "error.permission_denied": "이 작업을 할 권한이 없습니다.",
    "error.auth_required": "로그인한 뒤에 할 수 있습니다.",
    "error.unavailable": "지금은 잠시 이용할 수 없습니다. 조금 뒤에 다시 시도해 주세요.",
    "error.internal": "서버에서 오류가 발생했습니다.",
    "error.event_name": "이벤트 이름은 문자열이어야 합니다.",
    "error.profile.nickname_taken": "이 공간에 같은 닉네임을 쓰는 사람이 있습니다.",
    # -- rate limits --------------------------------------------------------------------------
    "error.rate_limited.disconnected": "요청이 너무 많아 연결을 끊었습니다.",
    "error.rate_limited.generic": "요청이 너무 많습니다." + _RETRY,
    "error.rate_limited.move": "이동 요청이 너무 많습니다." + _RETRY,
    "error.rate_limited.jump": "점프를 너무 자주 했습니다." + _RETRY,
    "error.rate_limited.profile": "프로필을 너무 자주 바꿨습니다." + _RETRY,
    "error.rate_limited.party_create": "파티를 너무 많이 만들었습니다." + _RETRY,
    "error.rate_limited.party_invite": "초대를 너무 많이 보냈습니다." + _RETRY,
    "error.rate_limited.party_invite_target": "이 사람에게 간 초대가 너무 많습니다." + _RETRY,
    "error.rate_limited.party_answer": "초대에 너무 자주 응답했습니다." + _RETRY,
    "error.rate_limited.party_leave": "파티 변경 요청이 너무 많습니다." + _RETRY,
    "error.rate_limited.party_zone": "파티 구역 이동 요청이 너무 많습니다." + _RETRY,
    "error.rate_limited.proximity": "근접 모드를 너무 자주 바꿨습니다." + _RETRY,
    "error.rate_limited.join": "입장 요청이 너무 많습니다." + _RETRY,
    "error.rate_limited.leave": "퇴장 요청이 너무 많습니다." + _RETRY,
    "error.rate_limited.reaction": "리액션을 너무 자주 보냈습니다." + _RETRY,
    "error.rate_limited.admin": "관리 명령을 너무 자주 보냈습니다." + _RETRY,
    "error.rate_limited.announce": "공지를 너무 자주 보냈습니다." + _RETRY,
    "error.rate_limited.recording": "녹화를 너무 자주 켜고 껐습니다." + _RETRY,
    "error.rate_limited.spotlight": "스포트라이트를 너무 자주 켜고 껐습니다." + _RETRY,
    "error.rate_limited.object": "오브젝트를 너무 자주 바꿨습니다." + _RETRY,
    # -- chat ---------------------------------------------------------------------------------
    "error.chat.too_fast": (
        "메시지 전송 속도가 너무 빠릅니다. {seconds:seconds} 뒤에 다시 보내 주세요."
    ),
    "error.chat.repeated": "같은 메시지를 계속 반복해서 보낼 수 없습니다.",
    "error.chat.no_text": "보낼 내용이 없습니다.",
    "error.chat.empty": "메시지를 입력해 주세요.",
    "error.chat.too_long": "메시지가 너무 깁니다. 최대 {limit}자까지 보낼 수 있습니다.",
    "error.chat.save_failed": "메시지를 저장하지 못했습니다. 다시 보내 주세요.",
    "error.muted": "음소거 중이라 메시지를 보낼 수 없습니다.",
    "error.muted_for": "음소거 중이라 앞으로 {seconds:seconds} 동안 메시지를 보낼 수 없습니다.",
    # -- whispers -----------------------------------------------------------------------------
    "error.whisper.no_target": "귓속말을 받을 사람을 지정해 주세요.",
    "error.whisper.target_absent": "상대방이 이 공간에 없습니다.",
    "error.whisper.nickname_absent": "'{nickname}'님을 이 공간에서 찾을 수 없습니다.",
    "error.whisper.nickname_ambiguous": (
        "'{nickname}' 닉네임을 쓰는 사람이 여럿입니다. 목록에서 골라 주세요."
    ),
    "error.whisper.self": "자신에게는 귓속말을 보낼 수 없습니다.",
    "error.whisper.save_failed": "귓속말을 저장하지 못했습니다.",
    # -- parties ------------------------------------------------------------------------------
    "error.party.not_in_party": "참여 중인 파티가 없습니다.",
    "error.party.not_member": "이 파티의 멤버가 아닙니다.",
    "error.party.zone_open": "파티 구역은 누구나 들어올 수 있어 초대가 필요 없습니다.",
    "error.party.invite_self": "자신을 초대할 수는 없습니다.",
    "error.party.already_member": "이미 파티에 있는 사람입니다.",
    "error.party.full": "파티 인원이 가득 찼습니다(최대 {limit}명).",
    "error.party.no_invitation": "이 파티에 초대받지 않았습니다.",
    "error.party.invitation_expired": "초대가 만료되었습니다.",
    "error.party.gone": "이미 없어진 파티입니다.",
    "error.party.invitation_needed": "초대를 받아야 들어갈 수 있는 파티입니다.",
    "error.party.not_in_zone": "파티 구역 안에 있지 않습니다.",
    "error.party.target_absent": "상대방이 이 공간에 없습니다.",
    "error.party.name_no_text": "파티 이름에 글자가 있어야 합니다.",
    "error.party.name_empty": "파티 이름을 입력해 주세요.",
    "error.party.name_too_long": "파티 이름이 너무 깁니다(최대 {limit}자).",
    "error.party.name_control": "파티 이름에는 제어 문자를 쓸 수 없습니다.",
    # -- nicknames ----------------------------------------------------------------------------
    "error.nickname.required": "닉네임을 입력해 주세요.",
    "error.nickname.too_long": "닉네임이 너무 깁니다(최대 {limit}자).",
    "error.nickname.control": "닉네임에는 제어 문자를 쓸 수 없습니다.",
    "error.nickname.no_text": "닉네임에 보이는 글자가 있어야 합니다.",
    "error.nickname.reserved": "사용할 수 없는 닉네임입니다.",
    # -- proximity ----------------------------------------------------------------------------
    "error.proximity.staff_only": "근접 모드는 스태프와 공간 소유자만 바꿀 수 있습니다.",
    # -- moderation (admin:error) -------------------------------------------------------------
    "error.admin.not_member": "이 공간의 멤버가 아닙니다.",
    "error.admin.staff_only": "스태프와 공간 소유자만 할 수 있습니다.",
    "error.admin.verify_failed": "권한을 확인하지 못했습니다. 다시 시도해 주세요.",
    "error.admin.target_absent": "'{nickname}'님을 이 공간에서 찾을 수 없습니다.",
    "error.admin.target_self": "자신에게는 할 수 없습니다.",
    "error.admin.duration": "음소거 시간은 1분부터 {minutes:minutes}까지 정할 수 있습니다.",
    "error.admin.mute_failed": "음소거하지 못했습니다.",
    "error.admin.unmute_failed": "음소거를 해제하지 못했습니다.",
    "error.admin.kick_failed": "내보내지 못했습니다.",
    "error.admin.message_absent": "해당 메시지가 없습니다.",
    "error.admin.message_elsewhere": "다른 공간의 메시지입니다.",
    "error.admin.announcement_empty": "공지 내용을 입력해 주세요.",
    "error.admin.failed": "처리하지 못했습니다. 다시 시도해 주세요.",
    "error.admin.target_unknown": "{target}에 해당하는 멤버가 없습니다.",
    "error.admin.outranked": "같거나 더 높은 역할의 멤버에게는 할 수 없습니다.",
    "error.admin.not_banned": "{nickname}님은 이 공간에서 차단되어 있지 않습니다.",
    "error.admin.no_history": "이 서버는 메시지를 저장하지 않아 삭제할 수 없습니다.",
    "error.admin.not_saved": (
        "데이터베이스가 응답하지 않아 {nickname}님이 공간을 나갈 때까지만 적용됩니다."
    ),
    # -- recording (recording:error) ----------------------------------------------------------
    "error.recording.staff_only": "스태프와 공간 소유자만 녹화할 수 있습니다.",
    "error.recording.already": "{nickname}님이 이미 녹화하고 있습니다.",
    "error.recording.not_recording": "지금은 녹화 중이 아닙니다.",
    "error.recording.stop_denied": "녹화한 사람이나 스태프, 공간 소유자만 녹화를 멈출 수 있습니다.",
    # -- spotlight (spotlight:error) ----------------------------------------------------------
    "error.spotlight.no_grant": "스포트라이트를 쓸 권한이 없습니다.",
    "error.spotlight.grant_expired": "스포트라이트 권한 기간이 끝났습니다.",
    "error.spotlight.not_active": "스포트라이트가 이미 꺼져 있습니다.",
    "error.spotlight.activate_failed": "스포트라이트를 켜지 못했습니다.",
    "error.spotlight.deactivate_failed": "스포트라이트를 끄지 못했습니다.",
    # -- map objects (object:error) -----------------------------------------------------------
    "error.object.place_denied": "이 공간에 오브젝트를 놓을 권한이 없습니다.",
    "error.object.update_denied": "이 공간의 오브젝트를 바꿀 권한이 없습니다.",
    "error.object.delete_denied": "이 공간의 오브젝트를 지울 권한이 없습니다.",
    "error.object.absent": "해당 오브젝트가 없습니다.",
    "error.object.place_failed": "오브젝트를 놓지 못했습니다.",
    "error.object.update_failed": "오브젝트를 바꾸지 못했습니다.",
    "error.object.delete_failed": "오브젝트를 지우지 못했습니다.",
    "error.object.invalid_link": (
        "연결할 수 없습니다. 상대 오브젝트가 없거나 이미 연결되어 있습니다."
    ),
    # -- reactions (reaction:error) --------------------------------------------------------
    "error.reaction.full": "이 메시지에는 리액션이 이미 너무 많습니다.",
    # -- malformed payloads -------------------------------------------------------------------
    "error.input.single_payload": "이벤트에는 데이터를 하나만 보낼 수 있습니다.",
    "error.input.too_deep": "데이터가 너무 깊게 중첩되어 있습니다.",
    "error.input.binary": "바이너리 첨부는 받지 않습니다.",
    "error.input.object_payload": "{event} 이벤트의 데이터는 객체여야 합니다.",
    "error.input.required": "{field} 값이 필요합니다.",
    "error.input.not_string": "{field} 값은 문자열이어야 합니다.",
    "error.input.not_object": "{field} 값은 객체여야 합니다.",
    "error.input.not_number": "{field} 값은 숫자여야 합니다.",
    "error.input.not_boolean": "{field} 값은 true 또는 false여야 합니다.",
    "error.input.out_of_range": "{field} 값이 허용 범위를 벗어났습니다.",
    "error.input.bad_id": "{field} 값은 영문자, 숫자, _ . : @ - 로 된 1~100자여야 합니다.",
    "error.input.bad_avatar_field": "{field} 값은 영문자, 숫자, _, - 로 된 1~50자여야 합니다.",
    "error.input.too_long": "{field} 값이 너무 깁니다(최대 {limit}자).",
    "error.input.length": "{field} 값은 1~{limit}자여야 합니다.",
    "error.input.no_text": "{field} 값에 글자가 있어야 합니다.",
    "error.input.invalid": "{field} 값이 올바르지 않습니다.",
    "error.input.field_detail": "{field}: {detail}",
    "error.input.token_too_long": "세션 토큰이 너무 깁니다.",
    "error.input.direction": "direction 값은 up, down, left, right 중 하나여야 합니다.",
    "error.input.chat_type": "type 값은 message, whisper, party 중 하나여야 합니다.",
    "error.input.avatar_type": 'avatarConfig.type 값은 "classic" 또는 "custom"이어야 합니다.',
}
