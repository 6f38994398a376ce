import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DisconnectPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISCONNECT_POLICY_UNSPECIFIED: _ClassVar[DisconnectPolicy]
    DISCONNECT_POLICY_CANCEL: _ClassVar[DisconnectPolicy]
    DISCONNECT_POLICY_CONTINUE: _ClassVar[DisconnectPolicy]

class RequestState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REQUEST_STATE_UNSPECIFIED: _ClassVar[RequestState]
    REQUEST_STATE_QUEUED: _ClassVar[RequestState]
    REQUEST_STATE_RUNNING: _ClassVar[RequestState]
    REQUEST_STATE_COMPLETED: _ClassVar[RequestState]
    REQUEST_STATE_CANCELLED: _ClassVar[RequestState]
    REQUEST_STATE_FAILED: _ClassVar[RequestState]

class MessageStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_STATUS_UNSPECIFIED: _ClassVar[MessageStatus]
    MESSAGE_STATUS_COMPLETE: _ClassVar[MessageStatus]
    MESSAGE_STATUS_CANCELLED: _ClassVar[MessageStatus]
    MESSAGE_STATUS_FAILED: _ClassVar[MessageStatus]

class HostState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOST_STATE_UNSPECIFIED: _ClassVar[HostState]
    HOST_STATE_UP: _ClassVar[HostState]
    HOST_STATE_DOWN: _ClassVar[HostState]

class McpServerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MCP_SERVER_STATE_UNSPECIFIED: _ClassVar[McpServerState]
    MCP_SERVER_STATE_CONNECTING: _ClassVar[McpServerState]
    MCP_SERVER_STATE_READY: _ClassVar[McpServerState]
    MCP_SERVER_STATE_UNAVAILABLE: _ClassVar[McpServerState]
    MCP_SERVER_STATE_STOPPED: _ClassVar[McpServerState]
DISCONNECT_POLICY_UNSPECIFIED: DisconnectPolicy
DISCONNECT_POLICY_CANCEL: DisconnectPolicy
DISCONNECT_POLICY_CONTINUE: DisconnectPolicy
REQUEST_STATE_UNSPECIFIED: RequestState
REQUEST_STATE_QUEUED: RequestState
REQUEST_STATE_RUNNING: RequestState
REQUEST_STATE_COMPLETED: RequestState
REQUEST_STATE_CANCELLED: RequestState
REQUEST_STATE_FAILED: RequestState
MESSAGE_STATUS_UNSPECIFIED: MessageStatus
MESSAGE_STATUS_COMPLETE: MessageStatus
MESSAGE_STATUS_CANCELLED: MessageStatus
MESSAGE_STATUS_FAILED: MessageStatus
HOST_STATE_UNSPECIFIED: HostState
HOST_STATE_UP: HostState
HOST_STATE_DOWN: HostState
MCP_SERVER_STATE_UNSPECIFIED: McpServerState
MCP_SERVER_STATE_CONNECTING: McpServerState
MCP_SERVER_STATE_READY: McpServerState
MCP_SERVER_STATE_UNAVAILABLE: McpServerState
MCP_SERVER_STATE_STOPPED: McpServerState

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_CREATION_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_READ_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cache_creation_input_tokens: _Optional[int] = ..., cache_read_input_tokens: _Optional[int] = ...) -> None: ...

class ToolInvocation(_message.Message):
    __slots__ = ("id", "name", "arguments_json", "result", "is_error")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    arguments_json: str
    result: str
    is_error: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ..., result: _Optional[str] = ..., is_error: _Optional[bool] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("message", "conversation_id", "user_id", "priority", "new_conversation", "provider", "model", "request_id", "on_disconnect")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NEW_CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ON_DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    message: str
    conversation_id: str
    user_id: str
    priority: int
    new_conversation: bool
    provider: str
    model: str
    request_id: str
    on_disconnect: DisconnectPolicy
    def __init__(self, message: _Optional[str] = ..., conversation_id: _Optional[str] = ..., user_id: _Optional[str] = ..., priority: _Optional[int] = ..., new_conversation: _Optional[bool] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., request_id: _Optional[str] = ..., on_disconnect: _Optional[_Union[DisconnectPolicy, str]] = ...) -> None: ...

class ChatResponse(_message.Message):
    __slots__ = ("response", "conversation_id", "request_id", "usage", "provider", "model", "stop_reason", "tool_calls")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    response: str
    conversation_id: str
    request_id: str
    usage: Usage
    provider: str
    model: str
    stop_reason: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolInvocation]
    def __init__(self, response: _Optional[str] = ..., conversation_id: _Optional[str] = ..., request_id: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., stop_reason: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[ToolInvocation, _Mapping]]] = ...) -> None: ...

class ChatStreamRequest(_message.Message):
    __slots__ = ("message", "conversation_id", "user_id", "priority", "new_conversation", "provider", "model", "request_id", "on_disconnect")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NEW_CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ON_DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    message: str
    conversation_id: str
    user_id: str
    priority: int
    new_conversation: bool
    provider: str
    model: str
    request_id: str
    on_disconnect: DisconnectPolicy
    def __init__(self, message: _Optional[str] = ..., conversation_id: _Optional[str] = ..., user_id: _Optional[str] = ..., priority: _Optional[int] = ..., new_conversation: _Optional[bool] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., request_id: _Optional[str] = ..., on_disconnect: _Optional[_Union[DisconnectPolicy, str]] = ...) -> None: ...

class QueuedEvent(_message.Message):
    __slots__ = ("request_id", "position", "estimated_wait_s")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    position: int
    estimated_wait_s: float
    def __init__(self, request_id: _Optional[str] = ..., position: _Optional[int] = ..., estimated_wait_s: _Optional[float] = ...) -> None: ...

class StartEvent(_message.Message):
    __slots__ = ("request_id", "conversation_id", "provider", "model")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    conversation_id: str
    provider: str
    model: str
    def __init__(self, request_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class TextDeltaEvent(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class ToolCallEvent(_message.Message):
    __slots__ = ("id", "name", "arguments_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    arguments_json: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class ToolResultEvent(_message.Message):
    __slots__ = ("id", "name", "result", "is_error")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    result: str
    is_error: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., result: _Optional[str] = ..., is_error: _Optional[bool] = ...) -> None: ...

class ChatStreamResponse(_message.Message):
    __slots__ = ("queued", "start", "text_delta", "tool_call", "tool_result", "done", "seq")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    TEXT_DELTA_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    queued: QueuedEvent
    start: StartEvent
    text_delta: TextDeltaEvent
    tool_call: ToolCallEvent
    tool_result: ToolResultEvent
    done: ChatResponse
    seq: int
    def __init__(self, queued: _Optional[_Union[QueuedEvent, _Mapping]] = ..., start: _Optional[_Union[StartEvent, _Mapping]] = ..., text_delta: _Optional[_Union[TextDeltaEvent, _Mapping]] = ..., tool_call: _Optional[_Union[ToolCallEvent, _Mapping]] = ..., tool_result: _Optional[_Union[ToolResultEvent, _Mapping]] = ..., done: _Optional[_Union[ChatResponse, _Mapping]] = ..., seq: _Optional[int] = ...) -> None: ...

class WatchRequestRequest(_message.Message):
    __slots__ = ("request_id", "after_seq", "user_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    after_seq: int
    user_id: str
    def __init__(self, request_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., user_id: _Optional[str] = ...) -> None: ...

class WatchRequestResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: ChatStreamResponse
    def __init__(self, event: _Optional[_Union[ChatStreamResponse, _Mapping]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ProviderStatus(_message.Message):
    __slots__ = ("name", "model", "reachable", "detail", "version", "model_available")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    reachable: bool
    detail: str
    version: str
    model_available: bool
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., reachable: _Optional[bool] = ..., detail: _Optional[str] = ..., version: _Optional[str] = ..., model_available: _Optional[bool] = ...) -> None: ...

class ProviderQueueStats(_message.Message):
    __slots__ = ("provider", "slots", "running", "waiting", "waiting_by_priority", "avg_wait_s", "avg_service_s", "hosts")
    class WaitingByPriorityEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    WAITING_BY_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    AVG_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    AVG_SERVICE_S_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    slots: int
    running: int
    waiting: int
    waiting_by_priority: _containers.ScalarMap[int, int]
    avg_wait_s: float
    avg_service_s: float
    hosts: _containers.RepeatedCompositeFieldContainer[HostStatus]
    def __init__(self, provider: _Optional[str] = ..., slots: _Optional[int] = ..., running: _Optional[int] = ..., waiting: _Optional[int] = ..., waiting_by_priority: _Optional[_Mapping[int, int]] = ..., avg_wait_s: _Optional[float] = ..., avg_service_s: _Optional[float] = ..., hosts: _Optional[_Iterable[_Union[HostStatus, _Mapping]]] = ...) -> None: ...

class HostStatus(_message.Message):
    __slots__ = ("url", "state", "state_since", "slots", "running", "models_loaded", "last_error", "models")
    URL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    MODELS_LOADED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    url: str
    state: HostState
    state_since: _timestamp_pb2.Timestamp
    slots: int
    running: int
    models_loaded: _containers.RepeatedScalarFieldContainer[str]
    last_error: str
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, url: _Optional[str] = ..., state: _Optional[_Union[HostState, str]] = ..., state_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., slots: _Optional[int] = ..., running: _Optional[int] = ..., models_loaded: _Optional[_Iterable[str]] = ..., last_error: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ...) -> None: ...

class QueueStats(_message.Message):
    __slots__ = ("waiting", "running", "max_pending", "max_pending_per_user", "providers")
    WAITING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    MAX_PENDING_FIELD_NUMBER: _ClassVar[int]
    MAX_PENDING_PER_USER_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    waiting: int
    running: int
    max_pending: int
    max_pending_per_user: int
    providers: _containers.RepeatedCompositeFieldContainer[ProviderQueueStats]
    def __init__(self, waiting: _Optional[int] = ..., running: _Optional[int] = ..., max_pending: _Optional[int] = ..., max_pending_per_user: _Optional[int] = ..., providers: _Optional[_Iterable[_Union[ProviderQueueStats, _Mapping]]] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("status", "provider", "model", "providers", "queue_stats", "active_users", "version", "user_id", "user_usage", "mcp_servers", "user_limits", "user_budget", "caller_admin", "identity_source")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_STATS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_USERS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_USAGE_FIELD_NUMBER: _ClassVar[int]
    MCP_SERVERS_FIELD_NUMBER: _ClassVar[int]
    USER_LIMITS_FIELD_NUMBER: _ClassVar[int]
    USER_BUDGET_FIELD_NUMBER: _ClassVar[int]
    CALLER_ADMIN_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    status: str
    provider: str
    model: str
    providers: _containers.RepeatedCompositeFieldContainer[ProviderStatus]
    queue_stats: QueueStats
    active_users: int
    version: str
    user_id: str
    user_usage: Usage
    mcp_servers: _containers.RepeatedCompositeFieldContainer[McpServerStatus]
    user_limits: UserLimits
    user_budget: TokenBudget
    caller_admin: bool
    identity_source: str
    def __init__(self, status: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., providers: _Optional[_Iterable[_Union[ProviderStatus, _Mapping]]] = ..., queue_stats: _Optional[_Union[QueueStats, _Mapping]] = ..., active_users: _Optional[int] = ..., version: _Optional[str] = ..., user_id: _Optional[str] = ..., user_usage: _Optional[_Union[Usage, _Mapping]] = ..., mcp_servers: _Optional[_Iterable[_Union[McpServerStatus, _Mapping]]] = ..., user_limits: _Optional[_Union[UserLimits, _Mapping]] = ..., user_budget: _Optional[_Union[TokenBudget, _Mapping]] = ..., caller_admin: _Optional[bool] = ..., identity_source: _Optional[str] = ...) -> None: ...

class McpServerStatus(_message.Message):
    __slots__ = ("name", "transport", "state", "tools", "last_error", "restarts")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    transport: str
    state: McpServerState
    tools: _containers.RepeatedScalarFieldContainer[str]
    last_error: str
    restarts: int
    def __init__(self, name: _Optional[str] = ..., transport: _Optional[str] = ..., state: _Optional[_Union[McpServerState, str]] = ..., tools: _Optional[_Iterable[str]] = ..., last_error: _Optional[str] = ..., restarts: _Optional[int] = ...) -> None: ...

class UserLimits(_message.Message):
    __slots__ = ("tier", "requests_per_minute", "max_active", "tokens_per_day", "tokens_per_month", "max_output_tokens")
    TIER_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    MAX_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MONTH_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    tier: str
    requests_per_minute: int
    max_active: int
    tokens_per_day: int
    tokens_per_month: int
    max_output_tokens: int
    def __init__(self, tier: _Optional[str] = ..., requests_per_minute: _Optional[int] = ..., max_active: _Optional[int] = ..., tokens_per_day: _Optional[int] = ..., tokens_per_month: _Optional[int] = ..., max_output_tokens: _Optional[int] = ...) -> None: ...

class TokenBudget(_message.Message):
    __slots__ = ("spent_today", "spent_this_month", "left_today", "left_this_month", "day_reset_time", "month_reset_time")
    SPENT_TODAY_FIELD_NUMBER: _ClassVar[int]
    SPENT_THIS_MONTH_FIELD_NUMBER: _ClassVar[int]
    LEFT_TODAY_FIELD_NUMBER: _ClassVar[int]
    LEFT_THIS_MONTH_FIELD_NUMBER: _ClassVar[int]
    DAY_RESET_TIME_FIELD_NUMBER: _ClassVar[int]
    MONTH_RESET_TIME_FIELD_NUMBER: _ClassVar[int]
    spent_today: int
    spent_this_month: int
    left_today: int
    left_this_month: int
    day_reset_time: _timestamp_pb2.Timestamp
    month_reset_time: _timestamp_pb2.Timestamp
    def __init__(self, spent_today: _Optional[int] = ..., spent_this_month: _Optional[int] = ..., left_today: _Optional[int] = ..., left_this_month: _Optional[int] = ..., day_reset_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., month_reset_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetQueueStatusRequest(_message.Message):
    __slots__ = ("request_id", "user_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class GetQueueStatusResponse(_message.Message):
    __slots__ = ("request_id", "state", "position", "estimated_wait_s", "priority", "provider")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    state: RequestState
    position: int
    estimated_wait_s: float
    priority: int
    provider: str
    def __init__(self, request_id: _Optional[str] = ..., state: _Optional[_Union[RequestState, str]] = ..., position: _Optional[int] = ..., estimated_wait_s: _Optional[float] = ..., priority: _Optional[int] = ..., provider: _Optional[str] = ...) -> None: ...

class CancelRequestRequest(_message.Message):
    __slots__ = ("request_id", "user_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class CancelRequestResponse(_message.Message):
    __slots__ = ("request_id", "state", "cancelled")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    state: RequestState
    cancelled: bool
    def __init__(self, request_id: _Optional[str] = ..., state: _Optional[_Union[RequestState, str]] = ..., cancelled: _Optional[bool] = ...) -> None: ...

class ListRequestsRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class RequestSummary(_message.Message):
    __slots__ = ("request_id", "user_id", "state", "position", "estimated_wait_s", "priority", "provider", "model", "enqueue_time", "start_time")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENQUEUE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    state: RequestState
    position: int
    estimated_wait_s: float
    priority: int
    provider: str
    model: str
    enqueue_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., state: _Optional[_Union[RequestState, str]] = ..., position: _Optional[int] = ..., estimated_wait_s: _Optional[float] = ..., priority: _Optional[int] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., enqueue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListRequestsResponse(_message.Message):
    __slots__ = ("requests", "all_users")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ALL_USERS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RequestSummary]
    all_users: bool
    def __init__(self, requests: _Optional[_Iterable[_Union[RequestSummary, _Mapping]]] = ..., all_users: _Optional[bool] = ...) -> None: ...

class ConversationSummary(_message.Message):
    __slots__ = ("conversation_id", "title", "create_time", "update_time", "message_count")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    title: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    message_count: int
    def __init__(self, conversation_id: _Optional[str] = ..., title: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message_count: _Optional[int] = ...) -> None: ...

class ListConversationsRequest(_message.Message):
    __slots__ = ("user_id", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListConversationsResponse(_message.Message):
    __slots__ = ("conversations", "next_page_token")
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    conversations: _containers.RepeatedCompositeFieldContainer[ConversationSummary]
    next_page_token: str
    def __init__(self, conversations: _Optional[_Iterable[_Union[ConversationSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TextContent(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class ToolUseContent(_message.Message):
    __slots__ = ("id", "name", "input_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    input_json: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., input_json: _Optional[str] = ...) -> None: ...

class ToolResultContent(_message.Message):
    __slots__ = ("tool_use_id", "content", "is_error", "name")
    TOOL_USE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tool_use_id: str
    content: str
    is_error: bool
    name: str
    def __init__(self, tool_use_id: _Optional[str] = ..., content: _Optional[str] = ..., is_error: _Optional[bool] = ..., name: _Optional[str] = ...) -> None: ...

class ContentBlock(_message.Message):
    __slots__ = ("text", "tool_use", "tool_result")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOOL_USE_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    text: TextContent
    tool_use: ToolUseContent
    tool_result: ToolResultContent
    def __init__(self, text: _Optional[_Union[TextContent, _Mapping]] = ..., tool_use: _Optional[_Union[ToolUseContent, _Mapping]] = ..., tool_result: _Optional[_Union[ToolResultContent, _Mapping]] = ...) -> None: ...

class ConversationMessage(_message.Message):
    __slots__ = ("role", "content", "status", "provider", "model", "usage", "create_time", "request_id", "text")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: _containers.RepeatedCompositeFieldContainer[ContentBlock]
    status: MessageStatus
    provider: str
    model: str
    usage: Usage
    create_time: _timestamp_pb2.Timestamp
    request_id: str
    text: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[_Iterable[_Union[ContentBlock, _Mapping]]] = ..., status: _Optional[_Union[MessageStatus, str]] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class GetConversationRequest(_message.Message):
    __slots__ = ("conversation_id", "user_id", "page_size", "page_token")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    user_id: str
    page_size: int
    page_token: str
    def __init__(self, conversation_id: _Optional[str] = ..., user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetConversationResponse(_message.Message):
    __slots__ = ("conversation", "messages", "next_page_token")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    conversation: ConversationSummary
    messages: _containers.RepeatedCompositeFieldContainer[ConversationMessage]
    next_page_token: str
    def __init__(self, conversation: _Optional[_Union[ConversationSummary, _Mapping]] = ..., messages: _Optional[_Iterable[_Union[ConversationMessage, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteConversationRequest(_message.Message):
    __slots__ = ("conversation_id", "user_id")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    user_id: str
    def __init__(self, conversation_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class DeleteConversationResponse(_message.Message):
    __slots__ = ("conversation_id", "deleted")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    deleted: bool
    def __init__(self, conversation_id: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...
