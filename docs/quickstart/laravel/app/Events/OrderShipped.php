<?php

namespace App\Events;

use Illuminate\Broadcasting\Channel;
use Illuminate\Broadcasting\InteractsWithSockets;
use Illuminate\Contracts\Broadcasting\ShouldBroadcastNow;
use Illuminate\Foundation\Events\Dispatchable;

// Broadcast as `App\Events\OrderShipped` on the public channel `orders`, with the public
// properties as its data: {"orderId": ...}. ShouldBroadcast instead queues it.
class OrderShipped implements ShouldBroadcastNow
{
    use Dispatchable, InteractsWithSockets;

    public function __construct(public int $orderId)
    {
    }

    public function broadcastOn(): array
    {
        return [new Channel('orders')];
    }
}
