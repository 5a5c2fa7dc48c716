"""make dream mode=interactive: drive the model's dream and the simulator with the arrow keys.

As in gymnasium's CarRacing play mode: left/right steer, up accelerates, down brakes. Both get
the same action every frame from the same start; the model feeds on its own predictions.
R goes back to the start, Esc (or closing the window) quits.
"""

import os

import numpy as np
import torch

from world_models.data.datamodule import to_float_frames
from world_models.errors import UserError
from world_models.rollout import dream_step

GAP, TITLE = 8, 28  # pixels between the two views; the title row above them
BRAKE = 0.8  # gymnasium's play mode brakes at 0.8: 1.0 locks the wheels


HEADLESS = ("dummy", "offscreen")  # SDL video drivers that draw nowhere anyone can see


def open_window(frame_shape, scale: int, video_driver: str | None, max_frames=None):
    """A window for two frames side by side; `video_driver` is SDL_VIDEODRIVER as the user had
    it (the simulator's module defaults it to 'dummy' for headless collection). Without a
    display only a run of `max_frames` makes sense: no one could press Esc."""
    if video_driver is None:
        os.environ.pop("SDL_VIDEODRIVER", None)
    else:
        os.environ["SDL_VIDEODRIVER"] = video_driver
    import pygame

    height, width = frame_shape[1] * scale, frame_shape[2] * scale
    try:
        pygame.display.init()
        pygame.font.init()
        screen = pygame.display.set_mode((2 * width + GAP, TITLE + height))
    except pygame.error as err:
        raise UserError(f"mode: interactive needs a display (pygame: {err}); "
                        "use mode=script") from None
    driver = pygame.display.get_driver()
    if driver in HEADLESS and max_frames is None:
        pygame.display.quit()
        raise UserError(f"mode: interactive found no display (SDL video driver '{driver}'); "
                        "use mode=script, or set window.max_frames for a headless run")
    pygame.display.set_caption("world_models dream: arrows drive, R restarts, Esc quits")
    return screen


class Keys:
    """The arrow keys held down, as a CarRacing action [steer, gas, brake]."""

    def __init__(self):
        self.held = set()

    def handle(self, event) -> str | None:
        """Track a key event; return 'restart' or 'quit' when one is asked for."""
        import pygame

        if event.type == pygame.QUIT:
            return "quit"
        if event.type == pygame.KEYDOWN:
            if event.key == pygame.K_ESCAPE:
                return "quit"
            if event.key == pygame.K_r:
                return "restart"
            self.held.add(event.key)
        elif event.type == pygame.KEYUP:
            self.held.discard(event.key)
        return None

    def action(self) -> np.ndarray:
        import pygame

        steer = float(pygame.K_RIGHT in self.held) - float(pygame.K_LEFT in self.held)
        gas = float(pygame.K_UP in self.held)
        brake = BRAKE if pygame.K_DOWN in self.held else 0.0
        return np.array([steer, gas, brake], dtype=np.float32)


def frame_tensor(frame: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 -> [1, 3, H, W] in [0, 1]."""
    return to_float_frames(torch.from_numpy(frame))[None]


def draw(screen, views, scale: int, font) -> None:
    import pygame

    screen.fill((255, 255, 255))
    for i, (label, frame) in enumerate(views):  # frame [3, H, W] in [0, 1]
        pixels = (frame.clamp(0, 1) * 255).round().byte().permute(2, 1, 0).numpy()  # [W, H, 3]
        surface = pygame.surfarray.make_surface(np.ascontiguousarray(pixels))
        size = (surface.get_width() * scale, surface.get_height() * scale)
        left = i * (size[0] + GAP)
        screen.blit(pygame.transform.scale(surface, size), (left, TITLE))
        screen.blit(font.render(label, True, (0, 0, 0)), (left + 4, 4))
    pygame.display.flip()


def run_window(screen, model, replay, scale: int, fps: int, max_frames: int | None = None,
               inject: dict | None = None) -> list[np.ndarray]:
    """Drive until Esc (or `max_frames`); return the action of every frame. `inject` maps a
    frame number to pygame events posted before it is read (how tests press keys)."""
    import pygame

    font, clock, keys = pygame.font.Font(None, 24), pygame.time.Clock(), Keys()
    real = replay.reset()
    dreamed, state, actions, frame = frame_tensor(real), None, [], 0
    dreamt = 0  # steps the model has fed on its own pictures since the last true frame
    while max_frames is None or frame < max_frames:
        for event in (inject or {}).get(frame, []):
            pygame.event.post(event)
        asked = [keys.handle(event) for event in pygame.event.get()]
        if "quit" in asked:
            break
        if "restart" in asked:
            real = replay.reset()
            dreamed, state, dreamt = frame_tensor(real), None, 0
        action = keys.action()
        dreamed, state = dream_step(model, dreamed, torch.from_numpy(action)[None], state,
                                    own_steps=dreamt)
        dreamt += 1
        real, ended = replay.step(action)
        if ended:  # the car left the playfield or time ran out: back to the start
            real = replay.reset()
            dreamed, state, dreamt = frame_tensor(real), None, 0
        actions.append(action)
        draw(screen, [("model (dream)", dreamed[0].cpu()),
                      ("simulator", frame_tensor(real)[0])], scale, font)
        clock.tick(fps)
        frame += 1
    pygame.display.quit()
    return actions
