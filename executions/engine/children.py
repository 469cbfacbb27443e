"""Child runs (`yield`): a sub-workflow runs as a child execution, started through the
executions service; the parent parks in place (still running, no lease) until the child
ends, when the child's end queues the parent again and the parent records its output."""

from __future__ import annotations

from typing import Any

from executions import services
from executions.engine import queue
from executions.engine.records import jsonable
from executions.engine.stop import Park, StepFailed
from executions.lifecycle import TERMINAL, Status
from executions.models import Execution


class Children:
    """The child-run part of RunContext. Uses: execution, state, recorded, record(),
    parked_state(), park_in_place()."""

    def child(self, path: str, *, workflow: str, arguments: Any) -> Any:
        """Run a sub-workflow as a child execution; the parent parks (still running, no lease)
        until the child finishes, when the child's end queues the parent again."""
        done = self.recorded.get(path)
        if done is not None:
            return done.output
        children = dict(self.state.get("children") or {})
        child_id = children.get(path)
        if child_id:
            child = Execution.objects.filter(pk=child_id).first()
            if child is not None and child.status == Status.COMPLETED:
                return self.record(
                    path,
                    "yield",
                    input={
                        "workflow": workflow,
                        "arguments": arguments,
                        "child_execution_id": str(child.pk),
                    },
                    output=child.output,
                )
            if child is None or child.status in TERMINAL:
                status = child.status if child else "missing"
                error = f": {child.error}" if child is not None and child.error else ""
                raise StepFailed(f"child execution {child_id} {status}{error}")

            def wait() -> None:
                state = self.parked_state()
                state["parked"] = {"kind": "child", "path": path, "child": child_id}
                self.park_in_place(None, path=path, message="", state=state)
                # The child may have ended after it was read above and before this park, its
                # wake-up then overwritten: read it again now that the park is written.
                ended = Execution.objects.filter(pk=child_id, status__in=TERMINAL).exists()
                if ended:
                    queue.make_runnable(self.execution.pk)

            raise Park("child", wait)

        def spawn() -> None:
            child = services.execution_start_child(
                parent=self.execution,
                workflow=workflow,
                arguments=jsonable(arguments),
                step_path=path,
            )
            children[path] = str(child.pk)
            state = self.parked_state()
            state["children"] = children
            state["parked"] = {"kind": "child", "path": path, "child": str(child.pk)}
            self.park_in_place(
                "wait",
                path=path,
                message=f"waiting for child execution {child.pk} ({workflow})",
                state=state,
            )

        raise Park("child", spawn)
